//! What a scenario does to the server besides running agents: write a config revision the
//! way an orchestrator does (under the config lock, fenced), start a rollout.

use locksmith_api::configs::{Content, Fence, Format, RevisionMeta, WriteConfigRequest};
use locksmith_api::{AcquireRequest, LeaseView};
use locksmith_client::{Client, ClientError};
use locksmith_core::Owner;

/// The orchestrator a scenario writes as.
fn orchestrator() -> Owner {
    Owner {
        node: "sim-orchestrator".into(),
        pid: 4242,
        start_time: 4242,
        boot_id: "sim-boot".into(),
        user: "sim".into(),
        purpose: "fleet simulation".into(),
        pid_ns: None,
    }
}

/// Writes `content` as a revision of `config` (a draft with `draft`) under a lease on
/// `configs/NAME` taken for it and released after; the revision's metadata.
pub async fn write_revision(
    client: &Client,
    config: &str,
    content: &str,
    draft: bool,
) -> Result<RevisionMeta, ClientError> {
    let lease = client
        .acquire(&AcquireRequest {
            resource: format!("configs/{config}"),
            owner: orchestrator(),
            ttl_ms: Some(30_000),
            wait_ms: Some(30_000),
            slots: None,
            lock_delay_ms: None,
        })
        .await?;
    let written = write_under(client, config, &lease, content, draft).await;
    client.release(lease.lease, None).await?;
    written
}

/// Writes `content` as a revision of `config` (a draft with `draft`) fenced by `lease`, a lease
/// on `configs/NAME` the caller holds (and keeps): what a writer that took the lock itself
/// does — and what a stale writer's fence looks like once the lock has moved on.
pub async fn write_under(
    client: &Client,
    config: &str,
    lease: &LeaseView,
    content: &str,
    draft: bool,
) -> Result<RevisionMeta, ClientError> {
    let written = client
        .write_config(
            config,
            &WriteConfigRequest {
                fence: Fence {
                    lease: lease.lease.0,
                    token: lease.token.0,
                },
                format: Format::Conf,
                content: Content {
                    content: Some(content.to_string()),
                    content_base64: None,
                },
                message: "fleet simulation".into(),
                draft,
            },
        )
        .await?;
    Ok(written.meta)
}
