//! `locksmith renew` and `locksmith release`: act on a lease by id.

use locksmith_api::format_age;
use locksmith_core::{FenceToken, LeaseId};

use crate::cli::{Global, LeaseArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{out, out_json};

pub async fn renew(global: &Global, args: LeaseArgs) -> anyhow::Result<Exit> {
    let subject = format!("lease {}", args.lease);
    let ctx = Context {
        subject: &subject,
        wait_flag: "--wait",
    };
    let lease = super::client(global, ctx)?
        .renew(LeaseId(args.lease), args.fence_token.map(FenceToken))
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&lease)?;
    } else {
        out(&format!(
            "lease {} token {} on {} renewed (ttl {})",
            lease.lease,
            lease.token,
            lease.resource,
            format_age(lease.ttl_ms)
        ))?;
    }
    Ok(Exit::Ok)
}

pub async fn release(global: &Global, args: LeaseArgs) -> anyhow::Result<Exit> {
    let subject = format!("lease {}", args.lease);
    let ctx = Context {
        subject: &subject,
        wait_flag: "--wait",
    };
    let released = super::client(global, ctx)?
        .release(LeaseId(args.lease), args.fence_token.map(FenceToken))
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&released)?;
    } else if released.already_released {
        out(&format!(
            "lease {} on {} was already released",
            released.lease, released.resource
        ))?;
    } else {
        out(&format!(
            "lease {} on {} released",
            released.lease, released.resource
        ))?;
    }
    Ok(Exit::Ok)
}
