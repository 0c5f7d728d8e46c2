//! The engine's token operations, and the published copy of the token table that requests
//! are authenticated against.
//!
//! A token change is a step like any other: the table changes under the state lock, its record
//! (`TokenRecord`, JSON) is written to the `tokens` record space and an audit record
//! (`token_created`, `token_revoked`) appended, in one durable batch. Once that batch is
//! durable the driver publishes a copy of the table (see `Engine::publish`): a request is
//! authenticated against the last durable table, so no token works — or stops working — before
//! the disk says so, and authenticating takes no engine lock.

use std::sync::Arc;

use imbl::HashMap;

use locksmith_auth::{
    CreateToken, InvalidToken, Permission, RevokeError, Secret, TOKEN_SPACE, TokenRecord,
    TokenTable,
};
use locksmith_core::{AuditKind, AuditRecord, DomainEvent, Effect, Effects, Mutation, Now};

use super::{Actor, Engine, EngineError};

/// The token table as last made durable, and the [`Actor`] of each token made once for it: a
/// request authenticated against it copies no string (see `App::caller`). Both are persistent
/// maps: the next copy shares them and makes actors only for the tokens that changed.
#[derive(Debug, Default)]
pub struct Published {
    table: TokenTable,
    actors: HashMap<String, Arc<Actor>>,
}

impl Published {
    /// The snapshot of `table`.
    pub fn new(table: TokenTable) -> Self {
        let actors = table
            .records()
            .map(|record| (record.id.clone(), actor_of(record)))
            .collect();
        Self { table, actors }
    }

    /// The snapshot of `table`, a newer copy of this one's: only the tokens changed since
    /// get a new actor.
    pub fn next(&self, table: TokenTable) -> Self {
        let mut actors = self.actors.clone();
        for record in table.changed_since(self.table.revision()) {
            actors.insert(record.id.clone(), actor_of(record));
        }
        Self { table, actors }
    }

    /// The actor of token `id`.
    pub fn actor(&self, id: &str) -> Option<&Arc<Actor>> {
        self.actors.get(id)
    }
}

fn actor_of(record: &TokenRecord) -> Arc<Actor> {
    let principal = record.principal();
    let any_lease = principal.allows(Permission::Operate).is_ok();
    Arc::new(Actor::new(principal, any_lease))
}

impl std::ops::Deref for Published {
    type Target = TokenTable;

    fn deref(&self) -> &TokenTable {
        &self.table
    }
}

/// The audit records' resource for token `id`.
pub fn token_resource(id: &str) -> String {
    format!("{TOKEN_SPACE}/{id}")
}

impl Engine {
    /// The token table as last made durable.
    pub fn tokens(&self) -> Arc<Published> {
        Arc::clone(&self.inner.tokens.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes with every durable change to the tokens (its value: the table's revision).
    /// Long-lived responses — event streams, wire connections — re-check their token on it.
    pub fn token_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.token_changes.subscribe()
    }

    /// Makes a token whose secret is made of `random`; durable before it returns. The secret
    /// is in the answer only.
    pub async fn create_token(
        &self,
        req: CreateToken,
        random: [u8; 32],
    ) -> Result<(TokenRecord, Secret), EngineError<InvalidToken>> {
        self.run(|state, now, fx| {
            let (record, secret) = state.tokens.create(req, random, now.wall_ms)?;
            persist(&record, "token_created", now, fx);
            Ok((record, secret))
        })
        .await
    }

    /// Revokes token `id`; durable (and the token refused) before it returns.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenRecord, EngineError<RevokeError>> {
        self.run(|state, now, fx| {
            let record = state.tokens.revoke(id, now.wall_ms)?;
            persist(&record, "token_revoked", now, fx);
            Ok(record)
        })
        .await
    }

    /// Every token as the engine's state has it, durable (see `Engine::read`).
    pub async fn token_list(
        &self,
    ) -> Result<Vec<locksmith_auth::TokenView>, locksmith_store::StoreError> {
        self.read(|state, now| state.tokens.list(now.wall_ms)).await
    }

    /// Replaces the published table with `tokens` if it is newer, and says so to whoever
    /// watches. Commit callbacks run in commit order, but a revision check costs nothing and
    /// keeps an older copy from ever replacing a newer one.
    pub(super) fn publish_tokens(&self, tokens: TokenTable) {
        let revision = tokens.revision();
        let last = self.tokens();
        if last.revision() >= revision {
            return;
        }
        // Built outside the lock: authentication goes on meanwhile, against the last table.
        let tokens = Arc::new(last.next(tokens));
        {
            let mut published = self.inner.tokens.write().unwrap_or_else(|p| p.into_inner());
            if published.revision() >= revision {
                return;
            }
            *published = tokens;
        }
        self.inner.token_changes.send_replace(revision);
    }
}

/// The record of a changed token and its audit event, for the operation's batch.
fn persist(record: &TokenRecord, event: &str, now: Now, fx: &mut Effects) {
    fx.push(Effect::Persist(Mutation::PutRecord {
        space: TOKEN_SPACE.to_owned(),
        key: record.id.clone(),
        value: record.to_bytes(),
    }));
    let detail = serde_json::json!({
        "id": record.id,
        "name": record.name,
        "role": record.role,
    });
    // The kinds are constants of this module, valid by construction.
    if let Ok(event) = DomainEvent::new(event, detail) {
        fx.push(Effect::Persist(Mutation::AppendAudit(AuditRecord {
            at_ms: now.wall_ms,
            ..AuditRecord::new(&token_resource(&record.id), AuditKind::Domain(event))
        })));
    }
}
