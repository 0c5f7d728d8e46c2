//! Rebuilding [`Configs`] at boot from the persisted records.
//!
//! The server pages through the spaces and hands every record to a [`Restorer`] (blobs may be
//! left out: they are read on demand, and their keys are every revision's SHA-256). Every
//! operation writes its records in one atomic batch, so the records always agree; if they do
//! not, the store was damaged or written by a bug, and [`Restorer::finish`] says where rather
//! than serving a history with a hole in it.

use std::collections::{BTreeMap, HashMap, HashSet};

use thiserror::Error;

use super::records::{BLOBS, HEADS, Head, REVISIONS, RevisionMeta, SCHEMAS, revision_key};
use super::{Config, Configs};
use crate::schema::Schema;

/// A stored record that cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("config record {space}/{key} cannot be restored: {reason}")]
pub struct RestoreError {
    /// Its space.
    pub space: String,
    /// Its key.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl RestoreError {
    fn new(space: &str, key: &str, reason: impl Into<String>) -> Self {
        Self {
            space: space.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Collects the stored records, then checks and builds the state ([`Restorer::finish`]).
#[derive(Debug, Default)]
pub struct Restorer {
    heads: BTreeMap<String, Head>,
    revisions: HashMap<String, Vec<RevisionMeta>>,
    schemas: HashMap<String, Vec<u8>>,
}

impl Restorer {
    /// Nothing restored yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one stored record of a config space ([`BLOBS`] records are accepted and not
    /// needed).
    pub fn record(&mut self, space: &str, key: &str, value: &[u8]) -> Result<(), RestoreError> {
        let bad = |reason: String| RestoreError::new(space, key, reason);
        match space {
            HEADS => {
                let head: Head = serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
                if head.name != key {
                    return Err(bad(format!("the head is of {:?}", head.name)));
                }
                self.heads.insert(head.name.clone(), head);
            }
            REVISIONS => {
                let meta: RevisionMeta =
                    serde_json::from_slice(value).map_err(|e| bad(e.to_string()))?;
                if revision_key(&meta.name, meta.rev) != key {
                    return Err(bad(format!("it holds {} rev {}", meta.name, meta.rev)));
                }
                self.revisions
                    .entry(meta.name.clone())
                    .or_default()
                    .push(meta);
            }
            SCHEMAS => {
                self.schemas.insert(key.to_owned(), value.to_vec());
            }
            BLOBS => {}
            _ => return Err(bad("not a config space".to_owned())),
        }
        Ok(())
    }

    /// Checks the records agree — every head's revisions are exactly 1..=latest in its
    /// format, its current revision is not a draft, its schema is stored and compiles — and
    /// builds the state.
    pub fn finish(mut self) -> Result<Configs, RestoreError> {
        let mut configs = BTreeMap::new();
        let mut blobs = HashSet::new();
        for (name, head) in self.heads {
            let bad = |reason: String| RestoreError::new(HEADS, &name, reason);
            let mut revisions = self.revisions.remove(&name).unwrap_or_default();
            revisions.sort_by_key(|m| m.rev);
            let numbered = revisions.iter().zip(1..).all(|(m, n)| m.rev == n);
            if !numbered || revisions.len() as u64 != head.latest {
                let found: Vec<u64> = revisions.iter().map(|m| m.rev).collect();
                return Err(bad(format!(
                    "latest is {}, but the revisions stored are {found:?}",
                    head.latest
                )));
            }
            if revisions.iter().any(|m| Some(m.format) != head.format) {
                return Err(bad(format!(
                    "its format is {:?}, but not every revision's is",
                    head.format
                )));
            }
            if let Some(current) = head.current {
                let ok = revisions
                    .get(current.saturating_sub(1) as usize)
                    .is_some_and(|m| !m.draft && current > 0);
                if !ok {
                    return Err(bad(format!(
                        "current is {current}, which is no stored revision that is not a draft"
                    )));
                }
            }
            let schema = match (&head.schema, self.schemas.remove(&name)) {
                (None, None) => None,
                (Some(reference), Some(bytes)) => {
                    let schema = Schema::compile(&bytes).map_err(|e| {
                        RestoreError::new(SCHEMAS, &name, format!("it does not compile: {e}"))
                    })?;
                    if schema.sha256() != reference.sha256 {
                        return Err(RestoreError::new(
                            SCHEMAS,
                            &name,
                            format!("its sha256 is not the head's {}", reference.sha256),
                        ));
                    }
                    Some(schema)
                }
                (Some(_), None) => return Err(bad("its schema is not stored".to_owned())),
                (None, Some(_)) => {
                    return Err(RestoreError::new(
                        SCHEMAS,
                        &name,
                        "a schema is stored, but the head names none",
                    ));
                }
            };
            blobs.extend(revisions.iter().map(|m| m.sha256.clone()));
            configs.insert(
                name,
                Config {
                    head,
                    revisions,
                    schema,
                },
            );
        }
        if let Some((name, metas)) = self.revisions.into_iter().next() {
            let rev = metas.first().map_or(0, |m| m.rev);
            return Err(RestoreError::new(
                REVISIONS,
                &revision_key(&name, rev),
                "a revision of a config with no head",
            ));
        }
        if let Some(name) = self.schemas.into_keys().next() {
            return Err(RestoreError::new(
                SCHEMAS,
                &name,
                "a schema of a config with no head",
            ));
        }
        Ok(Configs { configs, blobs })
    }
}

impl Configs {
    /// The state the records `(space, key, value)` describe (see [`Restorer`]).
    pub fn restore<'a>(
        records: impl IntoIterator<Item = (&'a str, &'a str, &'a [u8])>,
    ) -> Result<Configs, RestoreError> {
        let mut restorer = Restorer::new();
        for (space, key, value) in records {
            restorer.record(space, key, value)?;
        }
        restorer.finish()
    }
}
