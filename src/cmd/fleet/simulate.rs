//! `locksmith fleet simulate`: a fleet of simulated agents (`locksmith_sim`) against the
//! server, until Ctrl-C or SIGTERM (then exit 0), with a status line every few seconds.

use std::fmt::Write as _;

use anyhow::Context as _;
use locksmith_api::ErrorCode;
use locksmith_client::ClientError;
use locksmith_sim::{Fleet, FleetSpec, FleetStatus, SimError};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{FleetSimulateArgs, Global};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::out;

/// Descriptors the process needs besides one per agent's desired stream: the pool's other
/// connections (fetches, reports, heartbeats), the runtime, stdio.
const SPARE_DESCRIPTORS: u64 = 256;

pub async fn simulate(global: &Global, args: FleetSimulateArgs) -> anyhow::Result<Exit> {
    let ctx = Context {
        subject: "fleet simulate",
        wait_flag: "--wait",
    };
    // Before anything else, so a typo costs no call to the server and makes nothing on it.
    check_rates(&args)?;
    let limit = raise_open_files();
    let needed = args.agents as u64 + SPARE_DESCRIPTORS;
    if limit < needed {
        return Err(Failure::new(
            Exit::Usage,
            "fleet simulate",
            "cannot hold a stream per agent",
            format!(
                "{} agents need about {needed} open files; this process may open {limit}",
                args.agents
            ),
            "raise the hard limit (`ulimit -Hn`, LimitNOFILE=) or pass fewer --agents",
        )
        .into());
    }
    // Signals are watched from here on: a SIGTERM while the tokens are being made must not
    // kill the process with the default action.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let client = super::super::client(global, ctx)?;
    // One call before any token is made: it finds an unreachable server and a refused token.
    let on_server: Vec<String> = client
        .configs()
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?
        .configs
        .into_iter()
        .map(|c| c.head.name)
        .collect();
    let configs = if args.configs.is_empty() {
        on_server
    } else {
        // Not an error: like a real agent, a simulated one waits for a config's first
        // revision (`locksmith demo` starts its fleet before the orchestrator writes).
        for missing in args.configs.iter().filter(|c| !on_server.contains(c)) {
            eprintln!(
                "locksmith fleet simulate: {missing} has no revision yet; the agents apply the \
                 first one written"
            );
        }
        args.configs
    };
    if configs.is_empty() {
        return Err(Failure::new(
            Exit::Usage,
            "fleet simulate",
            "nothing to apply",
            "the server has no config",
            "write one (`locksmith config put NAME FILE`) or pass --config NAME",
        )
        .into());
    }
    let spec = FleetSpec {
        agents: args.agents,
        seed: args.seed,
        fail_rate: args.fail_rate,
        offline_rate: args.offline_rate,
        slow_rate: args.slow_rate,
        reboot_rate: args.reboot_rate,
        configs: configs.clone(),
        prefix: args.prefix,
    };
    spec.check().map_err(|e| {
        Failure::new(
            Exit::Usage,
            "fleet simulate",
            "cannot start the fleet",
            &e,
            "pass each --…-rate between 0 and 1",
        )
    })?;
    eprintln!(
        "locksmith fleet simulate: making {} node tokens and starting the agents against {}",
        args.agents,
        client.base()
    );
    let fleet = tokio::select! {
        started = Fleet::start_with(&client, spec) => {
            started.map_err(|e| start_failure(&e, ctx))?
        }
        // Stopped while the tokens were being made: the agents never started.
        _ = sigterm.recv() => return Ok(Exit::Ok),
        _ = sigint.recv() => return Ok(Exit::Ok),
    };
    let mut tick = tokio::time::interval(args.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => out(&status_line(&fleet.status(&configs)))?,
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }
    fleet.stop();
    Ok(Exit::Ok)
}

/// Refuses a rate outside 0..=1 (or NaN), naming its flag.
fn check_rates(args: &FleetSimulateArgs) -> Result<(), Failure> {
    let rates = [
        ("--fail-rate", args.fail_rate),
        ("--offline-rate", args.offline_rate),
        ("--slow-rate", args.slow_rate),
        ("--reboot-rate", args.reboot_rate),
    ];
    for (flag, rate) in rates {
        if !(0.0..=1.0).contains(&rate) {
            return Err(Failure::new(
                Exit::Usage,
                "fleet simulate",
                &format!("invalid {flag}"),
                format!("{rate} is not a chance between 0 and 1"),
                &format!("pass {flag} between 0 and 1, e.g. {flag} 0.01"),
            ));
        }
    }
    Ok(())
}

/// The line for a fleet that could not start: the exit of the server's answer (5 unreachable,
/// 7 a token that may not make node tokens), with the next step.
fn start_failure(e: &SimError, ctx: Context<'_>) -> Failure {
    let SimError::Server { source, .. } = e else {
        return Failure::new(
            Exit::Usage,
            "fleet simulate",
            "cannot start the fleet",
            e,
            "pass each --…-rate between 0 and 1 and at least one --config",
        );
    };
    let code = match source {
        ClientError::Api { body, .. } => Some(body.error),
        _ => None,
    };
    match code {
        Some(ErrorCode::Forbidden | ErrorCode::Unauthenticated) => Failure::new(
            Exit::Denied,
            "fleet simulate",
            "cannot make the agents' node tokens",
            e,
            "use an admin token (e.g. --token-file DATA/admin.token): it makes one node token \
             per agent",
        ),
        Some(ErrorCode::TooManyConnections) => Failure::new(
            Exit::Unavailable,
            "fleet simulate",
            "cannot start the fleet",
            e,
            "past ~16,000 agents raise the server's --max-connections, or pass fewer --agents",
        ),
        _ => Failure::from_client(source, ctx),
    }
}

/// `agents 5000 online 4990 offline 10 failed 3 | app.conf r7 4987 r6 13`.
fn status_line(s: &FleetStatus) -> String {
    let mut line = format!(
        "agents {} online {} offline {} failed {}",
        s.agents,
        s.online,
        s.agents - s.online,
        s.failed
    );
    for (config, revs) in &s.applied {
        let _ = write!(line, " | {config}");
        for (rev, n) in revs.iter().rev() {
            let rev = if *rev == 0 {
                "none".to_string()
            } else {
                format!("r{rev}")
            };
            let _ = write!(line, " {rev} {n}");
        }
    }
    line
}

/// Raises the soft limit of open files to the hard one (10,000 streams need 10,000+
/// descriptors); the limit in force after.
fn raise_open_files() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_status_line_counts_agents_and_each_revision_newest_first() {
        let s = FleetStatus {
            agents: 10,
            online: 9,
            failed: 1,
            applied: BTreeMap::from([("app.conf".into(), BTreeMap::from([(6, 2), (7, 8)]))]),
        };
        assert_eq!(
            status_line(&s),
            "agents 10 online 9 offline 1 failed 1 | app.conf r7 8 r6 2"
        );
    }
}
