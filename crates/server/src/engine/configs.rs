//! The engine's config operations: fenced changes made in one step with their fence check, and
//! reads of the revision store and its blobs.
//!
//! A fenced change (write, promote, rollback) runs entirely inside the step, under the state
//! lock: [`LockTable::check_writer`](locksmith_core::LockTable::check_writer) — is this lease,
//! with this token, a live holder of `configs/NAME` now? — then the [`Configs`] operation,
//! whose records and audit event go into the same batch. Nothing can come between the check
//! and the append (a break, an expiry and a new grant are steps too, and wait for the lock),
//! and the batch is durable as a whole or not at all: a revision is never stored under a token
//! that was not current when it was checked, nor half-stored.
//!
//! Content blobs are not kept in memory (1,000 configs × 100 revisions of 1 MiB would be
//! 100 GB): they are read from the store when asked for ([`Engine::config_blob`]), through
//! the committer, so a read sees every batch committed before it. Promote, rollback and
//! set_schema need an old revision's content to re-check it against the schema: it is read
//! *before* the step — revisions never change, and the [`Configs`] operation verifies it by its
//! SHA-256 — so the step itself never waits for the disk.

use std::sync::Arc;

use locksmith_config::store::BLOBS;
use locksmith_config::{
    Applied, Author, Configs, Format, PromoteError, RevisionMeta, RollbackError, SetSchemaError,
    WriteError, WriteRequest, Writer, resource_of,
};
use locksmith_core::{
    AuditKind, AuditRecord, Effect, Effects, FenceToken, LeaseId, Mutation, Now, WriterError,
};
use locksmith_store::StoreError;

use super::{Engine, EngineError};

/// A refused fenced change: the writer does not hold the lock now (`Fence`), or the change
/// itself was refused (`Refused`). Either way nothing was stored.
#[derive(Debug)]
pub enum Fenced<E> {
    /// The lease is not the current holder of `configs/NAME` with that token.
    Fence(WriterError),
    /// The config store's own refusal.
    Refused(E),
}

/// The lease and token a fenced change is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FenceArg {
    /// The lease on `configs/NAME`.
    pub lease: LeaseId,
    /// Its fencing token.
    pub token: FenceToken,
}

/// A write, as the engine takes it (the writer is the lease's holder, found in the step).
#[derive(Debug, Clone)]
pub struct ConfigWrite {
    /// The config (a valid name).
    pub name: String,
    /// Its format.
    pub format: Format,
    /// Its content.
    pub content: Vec<u8>,
    /// Why.
    pub message: String,
    /// A draft: not current until promoted.
    pub draft: bool,
    /// `--max-config-bytes`.
    pub max_bytes: usize,
}

impl Engine {
    /// Who a change made through this handle is by: the acting principal, or nobody
    /// authenticated (`--auth off`, the server's own work).
    fn config_author(&self) -> Author {
        match &self.actor {
            Some(actor) => Author {
                token: actor.principal.token.clone(),
                name: actor.principal.name.clone(),
            },
            None => Author {
                token: String::new(),
                name: crate::app::lab_principal().name,
            },
        }
    }

    /// Writes a revision of `write.name` under `fence`, checked in the same step; durable
    /// before it returns.
    pub async fn config_write(
        &self,
        write: ConfigWrite,
        fence: FenceArg,
    ) -> Result<RevisionMeta, EngineError<Fenced<WriteError>>> {
        let name = write.name.clone();
        self.fenced_config_change(&name, fence, move |configs, writer, now_ms| {
            let request = WriteRequest {
                name: write.name,
                format: write.format,
                content: write.content,
                message: write.message,
                draft: write.draft,
                writer,
                max_bytes: write.max_bytes,
            };
            configs.write(request, now_ms)
        })
        .await
    }

    /// Promotes draft `rev` of `name` under `fence`; `content` is the draft's (read by the
    /// caller, verified by its SHA-256). Durable before it returns.
    pub async fn config_promote(
        &self,
        name: &str,
        rev: u64,
        content: Vec<u8>,
        message: String,
        fence: FenceArg,
    ) -> Result<RevisionMeta, EngineError<Fenced<PromoteError>>> {
        self.fenced_config_change(name, fence, |configs, writer, now_ms| {
            configs.promote(name, rev, &content, &message, &writer, now_ms)
        })
        .await
    }

    /// Rolls `name` back to revision `to` under `fence`; `content` is revision `to`'s.
    /// Durable before it returns.
    pub async fn config_rollback(
        &self,
        name: &str,
        to: u64,
        content: Vec<u8>,
        message: String,
        fence: FenceArg,
    ) -> Result<RevisionMeta, EngineError<Fenced<RollbackError>>> {
        self.fenced_config_change(name, fence, |configs, writer, now_ms| {
            configs.rollback(name, to, &content, &message, &writer, now_ms)
        })
        .await
    }

    /// The step every fenced change of `name` shares: the fence check of `configs/NAME`, then
    /// `change` as the writer it names, its records and audit record in the same batch.
    async fn fenced_config_change<E>(
        &self,
        name: &str,
        fence: FenceArg,
        change: impl FnOnce(&mut Configs, Writer, u64) -> Result<Applied<RevisionMeta>, E>,
    ) -> Result<RevisionMeta, EngineError<Fenced<E>>> {
        let author = self.config_author();
        self.run(move |state, now, fx| {
            let resource = resource_of(name);
            let writer = fenced_writer(state, &resource, fence, author, now, fx)?;
            let applied =
                change(&mut state.configs, writer, now.wall_ms).map_err(Fenced::Refused)?;
            Ok(persist(applied, &resource, Some(fence), now, fx))
        })
        .await
    }

    /// Sets the schema of `name` (an operator's act: not fenced). `current` is the current
    /// revision's content as the caller read it; if another revision became current since,
    /// the store answers `WrongContent` and the caller reads again.
    pub async fn config_set_schema(
        &self,
        name: &str,
        schema: Vec<u8>,
        current: Option<Vec<u8>>,
    ) -> Result<locksmith_config::Head, EngineError<SetSchemaError>> {
        let author = self.config_author();
        self.run(move |state, now, fx| {
            let applied = state.configs.set_schema(
                name,
                &schema,
                current.as_deref(),
                &author,
                now.wall_ms,
            )?;
            Ok(persist(applied, &resource_of(name), None, now, fx))
        })
        .await
    }

    /// Reads the config store, durable (see [`read`](Self::read)).
    pub async fn configs<T>(&self, read: impl FnOnce(&Configs) -> T) -> Result<T, StoreError> {
        self.read(|state, _| read(&state.configs)).await
    }

    /// The content stored under `sha256`, from the store (it sees every batch committed before
    /// the call). `None` if there is none: the state names only stored blobs, so for a SHA-256
    /// the state gave, `None` means the store lost it.
    ///
    /// Blobs are named by their content, so they never change: the ones read lately are kept
    /// in memory ([`BlobCache`]) — a fleet fetching a new revision reads it once from the
    /// store, not once per endpoint through the committer's one thread.
    pub async fn config_blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(bytes) = self.inner.blobs.get(sha256) {
            return Ok(Some(bytes.to_vec()));
        }
        let found = self
            .inner
            .committer
            .query_record(BLOBS, sha256)
            .wait()
            .await?;
        if let Some(bytes) = &found {
            self.inner.blobs.insert(sha256, bytes);
        }
        Ok(found)
    }

    /// A stored record of a config space (the schema's source, say), from the store.
    pub async fn config_record(
        &self,
        space: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.committer.query_record(space, key).wait().await
    }
}

/// The writer of a fenced change, if `fence` is a live holder of `resource` now.
pub(super) fn fenced_writer<E>(
    state: &mut super::State,
    resource: &str,
    fence: FenceArg,
    author: Author,
    now: Now,
    fx: &mut Effects,
) -> Result<Writer, Fenced<E>> {
    let holder = state
        .locks
        .check_writer(resource, fence.lease, fence.token, now, fx)
        .map_err(Fenced::Fence)?;
    Ok(Writer {
        author,
        owner: holder.owner,
        token: holder.token,
    })
}

/// Puts an applied change's records and its audit record (resource `configs/NAME`, the lease
/// and token it was written under) into the step's batch, and returns its value.
pub(super) fn persist<T>(
    applied: Applied<T>,
    resource: &str,
    fence: Option<FenceArg>,
    now: Now,
    fx: &mut Effects,
) -> T {
    for mutation in applied.mutations {
        fx.push(Effect::Persist(mutation));
    }
    fx.push(Effect::Persist(Mutation::AppendAudit(AuditRecord {
        at_ms: now.wall_ms,
        lease: fence.map(|f| f.lease),
        token: fence.map(|f| f.token),
        ..AuditRecord::new(resource, AuditKind::Domain(applied.event))
    })));
    applied.value
}

/// The config blobs read lately, by SHA-256, up to [`BlobCache::BYTES`] of content.
#[derive(Debug)]
pub struct BlobCache {
    cache: quick_cache::sync::Cache<String, Arc<[u8]>, BlobWeight>,
}

#[derive(Debug, Clone)]
struct BlobWeight;

impl quick_cache::Weighter<String, Arc<[u8]>> for BlobWeight {
    fn weight(&self, _: &String, blob: &Arc<[u8]>) -> u64 {
        // An empty blob weighs one: a weight of zero would never be evicted.
        u64::try_from(blob.len()).unwrap_or(u64::MAX).max(1)
    }
}

impl Default for BlobCache {
    fn default() -> Self {
        Self {
            cache: quick_cache::sync::Cache::with_weighter(256, Self::BYTES, BlobWeight),
        }
    }
}

impl BlobCache {
    /// The most content kept: a few revisions of the largest configs.
    pub const BYTES: u64 = 64 << 20;

    fn get(&self, sha256: &str) -> Option<Arc<[u8]>> {
        self.cache.get(sha256)
    }

    fn insert(&self, sha256: &str, bytes: &[u8]) {
        self.cache.insert(sha256.to_owned(), Arc::from(bytes));
    }
}
