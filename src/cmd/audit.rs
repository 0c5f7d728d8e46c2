//! `locksmith audit`: the audit trail — every grant, end (and why), hold, acknowledgement and
//! break — as a table, oldest first.

use locksmith_api::AuditQuery;

use crate::cli::{AuditArgs, Global};
use crate::exit::Exit;
use crate::failure::{Context, Failure, wall_now_ms};
use crate::output::{audit_table, out, out_json};

pub async fn audit(global: &Global, args: AuditArgs) -> anyhow::Result<Exit> {
    let subject = args.resource.as_deref().unwrap_or("audit");
    let ctx = Context {
        subject,
        wait_flag: "--wait",
    };
    if let Some(resource) = &args.resource {
        super::check_resource(resource)?;
    }
    if args.limit == Some(0) {
        return Err(Failure::invalid(
            subject,
            "--limit",
            "must be at least 1",
            "pass e.g. --limit 50, or leave it out",
        )
        .into());
    }
    let query = AuditQuery {
        resource: args.resource.clone(),
        since_ms: args.since.map(|s| s.unix_ms(wall_now_ms())),
        after_seq: None,
        limit: args.limit,
    };
    let answer = super::client(global, ctx)?
        .audit(&query)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&answer)?;
    } else {
        out(&audit_table(&answer.records))?;
    }
    Ok(Exit::Ok)
}
