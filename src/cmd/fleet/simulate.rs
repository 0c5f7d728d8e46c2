//! `locksmith fleet simulate`: a fleet of simulated agents (`locksmith_sim`) against the
//! server, until Ctrl-C, with a status line every few seconds.

use std::fmt::Write as _;

use locksmith_sim::{Fleet, FleetSpec, FleetStatus};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

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
    let client = super::super::client(global, ctx)?;
    let configs = if args.configs.is_empty() {
        let all = client
            .configs()
            .await
            .map_err(|e| Failure::from_client(&e, ctx))?;
        all.configs.into_iter().map(|c| c.head.name).collect()
    } else {
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
    let fleet = Fleet::start_with(&client, spec).await.map_err(|e| {
        Failure::new(
            Exit::Other,
            "fleet simulate",
            "cannot start the fleet",
            &e,
            "use an admin token (node tokens are made per agent); past ~16,000 agents raise the \
             server's --max-connections",
        )
    })?;
    let mut tick = tokio::time::interval(args.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => out(&status_line(&fleet.status(&configs)))?,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    fleet.stop();
    Ok(Exit::Ok)
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
