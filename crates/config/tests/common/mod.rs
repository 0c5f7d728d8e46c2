//! Helpers shared by the store's tests: writers, and a record store that applies mutations.

#![allow(dead_code)]

use std::collections::BTreeMap;

use locksmith_config::{Author, Configs, Format, WriteRequest, Writer, store};
use locksmith_core::{FenceToken, Mutation, Owner};

pub const T0: u64 = 1_796_613_120_000;

pub fn writer(i: u64) -> Writer {
    Writer {
        author: Author {
            token: format!("tok-{i}"),
            name: format!("user{i}"),
        },
        owner: Owner {
            node: format!("node-{i}"),
            pid: 100 + u32::try_from(i).expect("small"),
            start_time: 7,
            boot_id: "boot".to_owned(),
            user: format!("user{i}"),
            purpose: "config update".to_owned(),
            pid_ns: None,
        },
        token: FenceToken(4_700 + i),
    }
}

pub fn request(name: &str, format: Format, content: &str, draft: bool) -> WriteRequest {
    WriteRequest {
        name: name.to_owned(),
        format,
        content: content.as_bytes().to_vec(),
        message: format!("write {content:?}"),
        draft,
        writer: writer(1),
        max_bytes: locksmith_config::DEFAULT_MAX_BYTES,
    }
}

/// The persisted records: `(space, key) → value`, as a store keeps them.
#[derive(Debug, Default, Clone)]
pub struct Records {
    pub map: BTreeMap<(String, String), Vec<u8>>,
    /// How many times each key was written.
    pub writes: BTreeMap<(String, String), usize>,
}

impl Records {
    /// Applies a batch, as a store would (checking what a store checks).
    pub fn apply(&mut self, mutations: &[Mutation]) {
        for m in mutations {
            m.validate().expect("a record within the store's limits");
            match m {
                Mutation::PutRecord { space, key, value } => {
                    let k = (space.clone(), key.clone());
                    *self.writes.entry(k.clone()).or_default() += 1;
                    self.map.insert(k, value.clone());
                }
                other => panic!("the config store only puts records, not {other:?}"),
            }
        }
    }

    pub fn get(&self, space: &str, key: &str) -> Option<&[u8]> {
        self.map
            .get(&(space.to_owned(), key.to_owned()))
            .map(Vec::as_slice)
    }

    /// The content of `name` rev `rev`, from its blob.
    pub fn content(&self, configs: &Configs, name: &str, rev: u64) -> Vec<u8> {
        let meta = configs.revision(name, rev).expect("a revision");
        self.get(store::BLOBS, &meta.sha256)
            .expect("its blob is stored")
            .to_vec()
    }

    pub fn restore(&self) -> Configs {
        Configs::restore(
            self.map
                .iter()
                .map(|((s, k), v)| (s.as_str(), k.as_str(), v.as_slice())),
        )
        .expect("the records restore")
    }

    pub fn count(&self, space: &str) -> usize {
        self.map.keys().filter(|(s, _)| s == space).count()
    }
}
