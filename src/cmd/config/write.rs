//! The fenced changes — `config put`, `rollback`, `promote` — and the lease each is made under.
//!
//! A change lands only if its token is the current holder's of `configs/NAME` when it commits
//! (the server checks it in the same step as the append). With `--lease`/`--fence-token` the
//! caller holds that lock already; without, the command takes it for the one change, owned by
//! its own process, and releases it after — whether the change landed or was refused, so a
//! refused put never leaves the config locked.

use std::future::Future;
use std::path::Path;

use locksmith_api::configs::{
    Fence, PromoteConfigRequest, RevisionView, RollbackConfigRequest, WriteConfigRequest,
};
use locksmith_api::{ErrorBody, ErrorCode, owner_name};
use locksmith_client::{Client, ClientError};
use locksmith_config::resource_of;
use locksmith_core::{FenceToken, HolderView, LeaseId};

use super::{choose_format, client_for, failure, read_file};
use crate::cli::{
    ConfigPromoteArgs, ConfigPutArgs, ConfigRollbackArgs, FenceArgs, Global, LockOptions,
};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{out, out_json};

/// TTL of the lease a command takes for one change: ample for a request of at most 1 MiB, and
/// short if the command dies holding it.
const CHANGE_TTL: std::time::Duration = std::time::Duration::from_secs(15);

pub async fn put(global: &Global, args: ConfigPutArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let client = client_for(global, name)?;
    let bytes = read_file(name, &args.file)?;
    let format = choose_format(&client, name, &args.file, args.format).await?;
    let content = locksmith_client::configs::content_of(bytes);
    let file = args.file.as_path();
    let written = fenced(global, &client, name, &args.fence, "put", |fence| {
        let req = WriteConfigRequest {
            fence,
            format,
            content: content.clone(),
            message: args.message.clone(),
            draft: args.draft,
        };
        let client = client.clone();
        async move { client.write_config(name, &req).await }
    })
    .await
    .map_err(|e| e.into_failure(name, Some(file)))?;
    report(&written, args.json, "written")
}

pub async fn rollback(global: &Global, args: ConfigRollbackArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let client = client_for(global, name)?;
    let done = fenced(global, &client, name, &args.fence, "rollback", |fence| {
        let req = RollbackConfigRequest {
            fence,
            to: args.to,
            message: args.message.clone(),
        };
        let client = client.clone();
        async move { client.rollback_config(name, &req).await }
    })
    .await
    .map_err(|e| e.into_failure(name, None))?;
    report(&done, args.json, &format!("rolled back to rev {}", args.to))
}

pub async fn promote(global: &Global, args: ConfigPromoteArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let client = client_for(global, name)?;
    let done = fenced(global, &client, name, &args.fence, "promote", |fence| {
        let req = PromoteConfigRequest {
            fence,
            rev: args.rev,
            message: args.message.clone(),
        };
        let client = client.clone();
        async move { client.promote_config(name, &req).await }
    })
    .await
    .map_err(|e| e.into_failure(name, None))?;
    report(
        &done,
        args.json,
        &format!("promoted from draft rev {}", args.rev),
    )
}

/// `NAME: rev 4 written (current) — token 12, 213 bytes, sha256 ab12cd34ef56, by admin`.
fn report(rev: &RevisionView, json: bool, what: &str) -> anyhow::Result<Exit> {
    if json {
        out_json(rev)?;
        return Ok(Exit::Ok);
    }
    let m = &rev.meta;
    let sha: String = m.sha256.chars().take(12).collect();
    let facts = format!(
        "token {}, {} bytes, sha256 {sha}, by {}",
        m.token, m.size, m.author.name
    );
    let line = if m.draft {
        let stays = m.base.map_or_else(
            || "no revision is current yet".to_string(),
            |base| format!("rev {base} stays current"),
        );
        format!(
            "{}: rev {} {what} as a DRAFT ({stays}) — {facts}; make it current with 'locksmith \
             config promote {} --rev {}'",
            m.name, m.rev, m.name, m.rev
        )
    } else if rev.current {
        format!("{}: rev {} {what}, now current — {facts}", m.name, m.rev)
    } else {
        format!("{}: rev {} {what}, not current — {facts}", m.name, m.rev)
    };
    out(&line)?;
    Ok(Exit::Ok)
}

/// Why a fenced change did not land.
enum Refused {
    /// The lock could not be taken for it (HOT, frozen, …): nothing was tried.
    Lock(Failure),
    /// The server refused the change; `lease` is the lease it was made under, and whether
    /// the command took it itself.
    Change {
        error: ClientError,
        lease: Fence,
        taken: bool,
        holders: Option<Vec<HolderView>>,
    },
}

impl Refused {
    fn into_failure(self, name: &str, file: Option<&Path>) -> Failure {
        match self {
            Refused::Lock(f) => f,
            Refused::Change {
                error,
                lease,
                taken,
                holders,
            } => match error.body() {
                Some(body) if fence_refusal(body.error) => {
                    fence_failure(name, body, lease, taken, holders.as_deref())
                }
                _ => failure(&error, name, file),
            },
        }
    }
}

/// Whether the server refused the change for its lease (not the holder, or not any more).
fn fence_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::StaleToken | ErrorCode::NotHolder | ErrorCode::Broken | ErrorCode::LeaseExpired
    )
}

/// Runs `change` under the lease `fence` names, or under one taken on `configs/NAME` for it and
/// released after (a release that fails is a warning: the change's outcome stands).
async fn fenced<T, F, Fut>(
    global: &Global,
    client: &Client,
    name: &str,
    fence: &FenceArgs,
    verb: &str,
    change: F,
) -> Result<T, Refused>
where
    F: FnOnce(Fence) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let resource = resource_of(name);
    if let (Some(lease), Some(token)) = (fence.lease, fence.fence_token) {
        let given = Fence { lease, token };
        return match change(given).await {
            Ok(done) => Ok(done),
            Err(error) => {
                let holders = holders_now(client, &resource, &error).await;
                Err(Refused::Change {
                    error,
                    lease: given,
                    taken: false,
                    holders,
                })
            }
        };
    }
    let lock = LockOptions {
        ttl: CHANGE_TTL,
        slots: 1,
        purpose: Some(format!("locksmith config {verb} {name}")),
        lock_delay: None,
    };
    // This command's own process owns the lease: it holds it only while the change is made.
    let req = super::super::acquire_request(
        global,
        &resource,
        &lock,
        std::process::id(),
        fence.wait,
        || format!("locksmith config {verb} {name}"),
    )
    .map_err(Refused::Lock)?;
    let lock_ctx = Context {
        subject: &resource,
        wait_flag: "--wait",
    };
    let lease = client
        .acquire(&req)
        .await
        .map_err(|e| Refused::Lock(Failure::from_client(&e, lock_ctx)))?;
    let taken = Fence {
        lease: lease.lease.0,
        token: lease.token.0,
    };
    let outcome = change(taken).await;
    let holders = match &outcome {
        Err(error) => holders_now(client, &resource, error).await,
        Ok(_) => None,
    };
    if let Err(e) = client
        .release(LeaseId(taken.lease), Some(FenceToken(taken.token)))
        .await
    {
        // Refused because the lease ended already (broken, expired) is what the change's
        // own refusal says; anything else is worth a warning.
        if !e.code().is_some_and(fence_refusal) {
            Failure::from_client(&e, lock_ctx).warn();
        }
    }
    outcome.map_err(|error| Refused::Change {
        error,
        lease: taken,
        taken: true,
        holders,
    })
}

/// Who holds `configs/NAME` now, for a change refused for its lease: from the refusal when it
/// names them, else asked of the server (`None` if that fails too: the line then says less).
async fn holders_now(
    client: &Client,
    resource: &str,
    error: &ClientError,
) -> Option<Vec<HolderView>> {
    let body = error.body().filter(|b| fence_refusal(b.error))?;
    if !body.holders.is_empty() {
        return Some(body.holders.clone());
    }
    client.lock(resource).await.ok().map(|l| l.lock.holders)
}

/// `NAME: WRITE REFUSED — <server's reason>; configs/NAME is held now by … with token 7;
/// <next step>`.
fn fence_failure(
    name: &str,
    body: &ErrorBody,
    lease: Fence,
    taken: bool,
    holders: Option<&[HolderView]>,
) -> Failure {
    let resource = resource_of(name);
    let now = match holders {
        Some([]) => format!("nobody holds {resource} now"),
        Some(holders) => {
            let who: Vec<String> = holders
                .iter()
                .map(|h| {
                    format!(
                        "{} with lease {} token {}",
                        owner_name(&h.owner),
                        h.lease,
                        h.token
                    )
                })
                .collect();
            format!("{resource} is held now by {}", who.join(", "))
        }
        None => format!("see who holds it with 'locksmith locks {resource}'"),
    };
    let next = if taken {
        format!("nothing was stored; run the command again to take {resource} anew")
    } else {
        format!(
            "nothing was stored; acquire {resource} again ('locksmith acquire {resource} \
             --json') and retry with its --lease and --fence-token"
        )
    };
    let what = match body.error {
        ErrorCode::Broken => "LEASE BROKEN",
        ErrorCode::StaleToken => "STALE TOKEN",
        ErrorCode::LeaseExpired => "LEASE ENDED",
        _ => "NOT THE HOLDER",
    };
    Failure {
        exit: Exit::for_code(body.error),
        line: format!(
            "{name}: {what} — lease {} token {} may not write it: {}; {now}; {next}",
            lease.lease, lease.token, body.message
        ),
    }
}
