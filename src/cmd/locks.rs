//! `locksmith locks`: the lslocks of Locksmith.

use crate::cli::{Global, LocksArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{Column, locks_table, out, out_json};

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
    let (views, server_time_ms) = match &args.resource {
        Some(resource) => {
            let one = client
                .lock(resource)
                .await
                .map_err(|e| Failure::from_client(&e, ctx))?;
            if args.json {
                out_json(&one)?;
                return Ok(Exit::Ok);
            }
            (vec![one.lock], one.server_time_ms)
        }
        None => {
            let all = client
                .locks()
                .await
                .map_err(|e| Failure::from_client(&e, ctx))?;
            if args.json {
                out_json(&all)?;
                return Ok(Exit::Ok);
            }
            (all.locks, all.server_time_ms)
        }
    };
    let columns = args.output.as_deref().unwrap_or(&Column::DEFAULT);
    out(&locks_table(&views, server_time_ms, columns))?;
    Ok(Exit::Ok)
}
