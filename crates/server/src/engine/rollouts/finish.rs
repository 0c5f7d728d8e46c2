//! A rollout's end: after the last wave passed, the draft it rolled out is promoted under the
//! rollout's own lease, then the lease is released — in one step, so the config's current
//! revision and the lock change together.

use locksmith_config::resource_of;
use locksmith_core::{Effect, Effects, Now};
use serde_json::json;

use super::{audit, author};
use crate::engine::State;
use crate::engine::configs::{FenceArg, fenced_writer, persist};

/// Promotes rollout `id`'s pending draft (`content` is the draft's, read by the caller and
/// verified by its SHA-256 in the config store) and releases its lock if the planner asked.
/// A promotion that cannot be made (the lease is gone, the store refuses) is recorded as
/// `not_promoted` with the reason: the endpoints stay on the rollout's overrides.
pub fn finalize(state: &mut State, id: &str, content: &[u8], now: Now, fx: &mut Effects) {
    let Some(entry) = state.rollouts.get(id) else {
        return;
    };
    let Some(rev) = entry.stored.promote else {
        return;
    };
    let spec = entry.stored.spec.clone();
    let lock = entry.stored.lock;
    let resource = resource_of(&spec.config);
    let mut not_promoted = None;
    let mut promoted = None;
    match lock {
        None => {
            not_promoted = Some(format!(
                "the rollout lost {resource} before it could promote revision {rev}; it stays a draft"
            ));
        }
        Some(lock) => {
            let fence = FenceArg {
                lease: lock.lease,
                token: lock.token,
            };
            match fenced_writer::<()>(state, &resource, fence, author(&spec), now, fx) {
                Err(_) => {
                    not_promoted = Some(format!(
                        "the rollout's lease on {resource} is no longer current; revision {rev} stays a draft"
                    ));
                }
                Ok(writer) => {
                    let message = format!("rollout {id}: every wave passed");
                    match state.configs.promote(
                        &spec.config,
                        rev,
                        content,
                        &message,
                        &writer,
                        now.wall_ms,
                    ) {
                        Ok(applied) => {
                            promoted = Some(persist(applied, &resource, Some(fence), now, fx).rev);
                        }
                        Err(e) => {
                            not_promoted = Some(format!("promoting revision {rev} failed: {e}"));
                        }
                    }
                }
            }
        }
    }
    let Some(entry) = state.rollouts.get_mut(id) else {
        return;
    };
    entry.stored.promote = None;
    if let Some(rev) = promoted {
        // The promoted revision has the draft's content, which every endpoint already runs:
        // the rollout's overrides keep them on the draft's number until the next change, so
        // none applies the same bytes again.
        entry.stored.ended_current = Some(Some(rev));
    }
    if let Some(why) = &not_promoted {
        tracing::warn!(rollout = %id, why, "the rollout's draft was not promoted");
        entry.stored.not_promoted = not_promoted.clone();
    }
    let release = std::mem::take(&mut entry.stored.release);
    let lock = if release {
        entry.stored.lock.take()
    } else {
        None
    };
    fx.push(Effect::Persist(entry.record()));
    audit(
        &resource,
        "rollout_promoted",
        json!({"rollout": id, "rev": rev, "promoted": not_promoted.is_none(), "why": not_promoted}),
        now,
        fx,
    );
    if let Some(lock) = lock
        && let Err(e) = state.locks.release(lock.lease, Some(lock.token), now, fx)
    {
        tracing::warn!(rollout = %id, error = ?e, "the rollout's lease was already gone");
    }
}
