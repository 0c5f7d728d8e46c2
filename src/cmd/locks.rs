//! `locksmith locks`: the lslocks of Locksmith.
//!
//! Run on a holder's node, it first checks that node's holders are alive and quietly reports
//! the dead ones (see `liveness`), so the listing shows no ghost; `--no-check` skips that.

use locksmith_api::{LockResponse, LocksResponse};
use locksmith_client::Client;

use super::liveness;
use crate::cli::{Global, LocksArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{Column, locks_table, out, out_json};

/// What was listed: one resource, or all.
enum Listing {
    One(LockResponse),
    All(LocksResponse),
}

impl Listing {
    async fn fetch(
        client: &Client,
        resource: Option<&str>,
        prefix: Option<&str>,
        ctx: Context<'_>,
    ) -> Result<Self, Failure> {
        let fetched = match resource {
            Some(r) => client.lock(r).await.map(Listing::One),
            None => client.locks_matching(prefix).await.map(Listing::All),
        };
        fetched.map_err(|e| Failure::from_client(&e, ctx))
    }

    fn views(&self) -> &[locksmith_core::ResourceView] {
        match self {
            Listing::One(one) => std::slice::from_ref(&one.lock),
            Listing::All(all) => &all.locks,
        }
    }
}

pub async fn locks(global: &Global, args: LocksArgs) -> anyhow::Result<Exit> {
    let subject = args.resource.as_deref().unwrap_or("locks");
    let ctx = Context {
        subject,
        wait_flag: "--wait",
    };
    if let Some(resource) = &args.resource {
        super::check_resource(resource)?;
    }
    let client = super::client(global, ctx)?;
    let mut listing = Listing::fetch(
        &client,
        args.resource.as_deref(),
        args.prefix.as_deref(),
        ctx,
    )
    .await?;
    if !args.no_check {
        let here = liveness::here(global);
        let mut checks = liveness::check(&here, listing.views());
        let operator = super::operator(global).map_err(|f| f.line);
        if liveness::report(&client, &here, operator, &mut checks)
            .await
            .is_some()
        {
            listing = Listing::fetch(
                &client,
                args.resource.as_deref(),
                args.prefix.as_deref(),
                ctx,
            )
            .await?;
        }
        for c in checks.iter().filter(|c| c.verdict.is_dead()) {
            tracing::debug!(resource = %c.resource, lease = %c.lease, outcome = ?c.reported, "dead holder");
        }
    }
    let (views, server_time_ms) = match &listing {
        Listing::One(one) if args.json => return json(one),
        Listing::All(all) if args.json => return json(all),
        Listing::One(one) => (std::slice::from_ref(&one.lock), one.server_time_ms),
        Listing::All(all) => (all.locks.as_slice(), all.server_time_ms),
    };
    let columns = args.output.as_deref().unwrap_or(&Column::DEFAULT);
    out(&locks_table(views, server_time_ms, columns))?;
    Ok(Exit::Ok)
}

fn json(value: &impl serde::Serialize) -> anyhow::Result<Exit> {
    out_json(value)?;
    Ok(Exit::Ok)
}
