//! `locksmith acquire`: take a lock on behalf of the calling shell or script.

use locksmith_api::format_age;

use crate::cli::{AcquireArgs, Global};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{out, out_json};

pub async fn acquire(global: &Global, args: AcquireArgs) -> anyhow::Result<Exit> {
    // The CLI exits at once: the lease belongs to whoever runs it and will renew and release —
    // the shell, not the subshell of a `$(…)` or pipeline it runs in, which exits at once too.
    let pid = args
        .pid
        .unwrap_or_else(|| locksmith_host::lasting_ancestor(std::os::unix::process::parent_id()));
    let req = super::acquire_request(global, &args.resource, &args.lock, pid, args.wait, || {
        locksmith_host::command_line(pid)
            .unwrap_or_else(|| format!("locksmith acquire {}", args.resource))
    })?;
    let ctx = Context {
        subject: &args.resource,
        wait_flag: "--wait",
    };
    let client = super::client(global, ctx)?;
    let lease = client
        .acquire(&req)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&lease)?;
    } else {
        out(&format!(
            "lease {} token {} on {} (ttl {})",
            lease.lease,
            lease.token,
            lease.resource,
            format_age(lease.ttl_ms)
        ))?;
    }
    Ok(Exit::Ok)
}
