//! `locksmith watch [RESOURCE]`: follows the server's events (`GET /v1/events`), one line per
//! event, until Ctrl-C (or SIGTERM) or the server ends the stream — exit 0, or 7 when it ended
//! it because the token stopped working.

use anyhow::Context as _;
use locksmith_api::ErrorCode;
use locksmith_client::ClientError;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{Global, WatchArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{audit_line, note, out};

pub async fn watch(global: &Global, args: WatchArgs) -> anyhow::Result<Exit> {
    let subject = args.resource.as_deref().unwrap_or("events");
    let ctx = Context {
        subject,
        wait_flag: "--wait",
    };
    if let Some(resource) = &args.resource {
        super::check_resource(resource)?;
    }
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let client = super::client(global, ctx)?;
    let mut events = client
        .events(args.resource.as_deref())
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    // On stderr, so that stdout is exactly one line per event; once it is printed, the
    // subscription is in place and no later event is missed.
    let on = args
        .resource
        .as_deref()
        .map(|r| format!(" on {r}"))
        .unwrap_or_default();
    note(&format!(
        "watching events{on} at {}; Ctrl-C to stop",
        client.base()
    ))?;
    loop {
        tokio::select! {
            next = events.next() => match next {
                Ok(Some(record)) if args.json => out(&serde_json::to_string(&record)?)?,
                Ok(Some(record)) => out(&audit_line(&record))?,
                Ok(None) => {
                    // The server ends a stream when it shuts down, and when the stream's token
                    // stops working (revoked, expired): one cheap read tells which.
                    if let Err(e) = client.holds().await
                        && matches!(
                            e.code(),
                            Some(ErrorCode::Unauthenticated | ErrorCode::Forbidden)
                        )
                    {
                        return Err(Failure::from_client(&e, ctx).into());
                    }
                    note("the server ended the event stream")?;
                    return Ok(Exit::Ok);
                }
                // One event this CLI cannot read must not end the watch: say so and go on.
                Err(e @ ClientError::Decode { .. }) => Failure::new(
                    Exit::Other,
                    subject,
                    "unreadable event",
                    e,
                    "skipped it; 'locksmith audit --json' shows the record",
                )
                .warn(),
                Err(e) => return Err(Failure::from_client(&e, ctx).into()),
            },
            _ = sigint.recv() => return Ok(Exit::Ok),
            _ = sigterm.recv() => return Ok(Exit::Ok),
        }
    }
}
