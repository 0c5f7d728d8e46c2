//! `locksmith demo`: the incident (../shared/INCIDENT.md) replayed end to end against a real
//! server in a temporary directory and a simulated fleet (`locksmith fleet simulate`), every
//! step a real command with its real output, narrated — ending in `ALL CLEAR`.

mod stage;

use std::time::Duration;

use anyhow::{Context, bail};
use locksmith_api::agents::ApplyState;

use crate::cli::DemoArgs;
use crate::exit::Exit;
use stage::{Proc, Stage, show};

const CONFIG: &str = "aim_lock_config.conf";
const RESOURCE: &str = "configs/aim_lock_config.conf";

/// Runs the demo; `Exit::Ok` when it ended in ALL CLEAR.
pub async fn demo(args: DemoArgs) -> anyhow::Result<Exit> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || script(&args, &handle))
        .await
        .context("the demo stopped")?
}

/// How many endpoints report `rev` of the config applied.
fn applied(handle: &tokio::runtime::Handle, client: &locksmith_client::Client, rev: u64) -> usize {
    handle
        .block_on(client.fleet(""))
        .map(|fleet| {
            fleet
                .agents
                .iter()
                .flat_map(|a| &a.configs)
                .filter(|c| {
                    c.config == CONFIG
                        && c.report
                            .as_ref()
                            .is_some_and(|r| r.state == ApplyState::Applied && r.applied_rev == rev)
                })
                .count()
        })
        .unwrap_or(0)
}

/// The newest revision of the config (drafts included).
fn latest(handle: &tokio::runtime::Handle, client: &locksmith_client::Client) -> Option<u64> {
    let history = handle.block_on(client.config_history(CONFIG)).ok()?;
    Some(history.head.latest)
}

/// The number after the first `word ` in the command's output (`lease 3 token 3 on …`).
fn after_word(text: &str, word: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == word)?;
    words.next()?.trim_end_matches([',', ':']).parse().ok()
}

fn json_str(text: &str, field: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()?
        .get(field)?
        .as_str()
        .map(str::to_owned)
}

fn script(args: &DemoArgs, handle: &tokio::runtime::Handle) -> anyhow::Result<Exit> {
    let s = Stage::start(args.fast)?;
    let admin = s.admin.clone();
    let client = locksmith_client::Client::new(&s.url)?.with_token(&admin)?;
    let n = args.agents;
    s.say(
        "The fleet",
        &format!(
            "A Locksmith server is running at {} (data in {}). {n} simulated endpoints — patrol \
             drones, loading arms, research rigs, each a real agent state machine with its own \
             node token — read aim_lock_config.conf from it.",
            s.url,
            s.dir().display()
        ),
    );
    let token = |name: &str, role: &str| -> anyhow::Result<String> {
        let (code, out) = s.quiet(
            &admin,
            None,
            &["token", "create", "--name", name, "--role", role, "--json"],
        );
        if code != 0 {
            bail!("could not make the token {name}");
        }
        json_str(&out, "token").context("no secret in the answer")
    };
    let orchestrator = token("orchestrator@node-7", "client")?;
    let alice = token("alice@ops", "operator")?;
    let oncall = token("oncall@ops", "operator")?;
    show(
        "(tokens made for orchestrator@node-7, a client, and alice@ops and oncall@ops, operators)",
    );
    let _fleet = Proc(
        std::process::Command::new(&s.bin)
            .args([
                "--server", &s.url, "fleet", "simulate", "--seed", "7", "--prefix", "ep",
            ])
            .args(["--agents", &n.to_string(), "--config", CONFIG])
            .env("LOCKSMITH_TOKEN", &admin)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(s.path("fleet.log"))?)
            .spawn()
            .context("cannot start the simulated fleet")?,
    );

    // Night shift: the orchestrator writes tonight's tuning; the fleet applies it.
    std::fs::write(
        s.path("tuned.conf"),
        "aim_sensitivity = 0.72\nsafety_threshold = 0.9\nupdate_window = \"02:00-04:00\"\n",
    )?;
    s.say(
        "02:58 — a normal cycle",
        "The orchestrator on node-7 writes tonight's tuning. `config put` takes the lock \
         configs/aim_lock_config.conf, writes a revision under its fencing token, releases it; \
         every endpoint applies it atomically.",
    );
    s.run(
        "orchestrator",
        &orchestrator,
        Some("node-7"),
        &[
            "config",
            "put",
            CONFIG,
            "tuned.conf",
            "-m",
            "nightly tuning",
        ],
    );
    let rev1 = latest(handle, &client).context("the first write failed")?;
    let all = s.wait_until(Duration::from_secs(60), || {
        applied(handle, &client, rev1) >= n
    });
    show(format!(
        "{} of {n} endpoints applied revision {rev1}{}",
        applied(handle, &client, rev1),
        if all {
            ""
        } else {
            " (the rest are offline or slow)"
        }
    ));

    // A hotfix draft written earlier by alice, under an older token: the bypass that fails.
    std::fs::write(
        s.path("hotfix.conf"),
        "aim_sensitivity = 0.72\nsafety_threshold = 0.9\nupdate_window = \"03:30-05:00\"\n",
    )?;
    put_hotfix_draft(&s, &alice);
    let stale_draft = latest(handle, &client).context("the draft failed")?;

    s.say(
        "03:12 — the orchestrator takes the lock, writes, and crashes",
        "It acquires the lock for its update cycle, writes a revision under its new token — \
         the endpoints apply it — and dies without releasing: its lease stays until it expires.",
    );
    let (_, out) = s.run(
        "orchestrator",
        &orchestrator,
        Some("node-7"),
        &[
            "acquire",
            RESOURCE,
            "--ttl",
            "5m",
            "--purpose",
            "orchestrator update cycle",
        ],
    );
    let (lease, fence) = after_word(&out, "lease")
        .zip(after_word(&out, "token"))
        .context("the orchestrator got no lease")?;
    s.run(
        "orchestrator",
        &orchestrator,
        Some("node-7"),
        &[
            "config",
            "put",
            CONFIG,
            "tuned.conf",
            "--lease",
            &lease.to_string(),
            "--fence-token",
            &fence.to_string(),
            "-m",
            "cycle 03:12",
        ],
    );
    let rev2 = latest(handle, &client).context("the orchestrator's write failed")?;
    s.wait_until(Duration::from_secs(60), || {
        applied(handle, &client, rev2) >= n
    });
    show(format!("(node-7 goes dark: nothing renews lease {lease})"));

    // Three drones of the fleet, by name.
    let drones: Vec<String> = handle
        .block_on(client.fleet("role=drone"))
        .map(|f| f.agents.into_iter().take(3).map(|a| a.node).collect())
        .unwrap_or_default();
    let [d0, _, _] = drones.as_slice() else {
        bail!("the simulated fleet has fewer than three drones");
    };
    let (code, out) = s.quiet(
        &admin,
        None,
        &[
            "token", "create", "--name", d0, "--role", "node", "--node", d0, "--json",
        ],
    );
    let drone = match code {
        0 => json_str(&out, "token").context("no secret in the answer")?,
        _ => bail!("could not make {d0}'s token"),
    };
    s.say(
        "03:40 — the fleet is stuck: HOT",
        "Every endpoint that needs the config's lock is refused: a drone's local update script \
         asks for it, and so does alice's hotfix.",
    );
    s.run(
        d0,
        &drone,
        Some(d0),
        &[
            "acquire",
            RESOURCE,
            "--ttl",
            "30s",
            "--purpose",
            "local recalibration",
        ],
    );
    s.run(
        "alice",
        &alice,
        None,
        &[
            "config",
            "put",
            CONFIG,
            "hotfix.conf",
            "-m",
            "hotfix",
            "--wait",
            "0s",
        ],
    );
    s.say(
        "Who holds it, and is it alive?",
        "One command explains the ghost.",
    );
    s.run("alice", &alice, None, &["why", RESOURCE]);

    s.say(
        "The bypass that fails: a shadow to a canary of three",
        "Alice sends her hotfix draft as a shadow to three drones. It was written under an \
         older token than the one the drones already applied, so each refuses it locally.",
    );
    s.run(
        "alice",
        &alice,
        None,
        &[
            "config",
            "shadow",
            CONFIG,
            "--rev",
            &stale_draft.to_string(),
            "--nodes",
            &drones.join(","),
        ],
    );
    s.wait_until(Duration::from_secs(10), || {
        handle
            .block_on(client.fleet_node(d0))
            .is_ok_and(|a| a.configs.iter().any(|c| c.shadow_report.is_some()))
    });
    s.run("alice", &alice, None, &["fleet", "show", d0]);

    s.say(
        "The careful fix: a hold point, acknowledged",
        "Nothing may re-grab the lock while it is cleared: alice freezes it for 90 s, and \
         on-call acknowledges — a second person.",
    );
    let (_, out) = s.run(
        "alice",
        &alice,
        None,
        &[
            "hold",
            RESOURCE,
            "--for",
            "90s",
            "--require-ack",
            "--reason",
            "stopping the orchestrator for 90 s to clear a stale lock",
        ],
    );
    let hold = after_word(&out, "hold").context("no hold")?;
    s.run("oncall", &oncall, None, &["ack", &hold.to_string()]);
    s.say(
        "The audited break",
        "Alice breaks the dead orchestrator's lease: it is revoked, the fence advances so any \
         write carrying the old token is refused, and the audit trail says who and why.",
    );
    s.run(
        "alice",
        &alice,
        None,
        &[
            "break",
            RESOURCE,
            "--reason",
            "orchestrator on node-7 crashed at 03:12",
        ],
    );
    lift_holds(&s, &alice, handle, &client);

    s.say(
        "The real fix, rolled out: canary, hold point, waves",
        "Alice writes the hotfix again as a draft — now under a current token — and rolls it \
         out: a canary of three, a hold point on-call approves, then the fleet in waves.",
    );
    put_hotfix_draft(&s, &alice);
    let hotfix = latest(handle, &client).context("the hotfix failed")?;
    s.run(
        "alice",
        &alice,
        None,
        &[
            "rollout",
            "start",
            CONFIG,
            "--rev",
            &hotfix.to_string(),
            "--canary",
            "3",
            "--waves",
            "10%,50%,100%",
            "--hold-after",
            "canary",
            "--approvals",
            "1",
            "--max-failures",
            "5%",
            "--deadline",
            "2m",
        ],
    );
    let id = handle
        .block_on(client.rollouts(Some(CONFIG), false))
        .ok()
        .and_then(|l| l.rollouts.into_iter().next())
        .map(|r| r.id)
        .context("the rollout did not start")?;
    s.wait_until(Duration::from_secs(60), || {
        handle.block_on(client.rollout(&id)).is_ok_and(|r| {
            matches!(
                r.state,
                Some(locksmith_api::rollouts::State::AwaitingApproval { .. })
            )
        })
    });
    s.run_clipped("alice", &alice, None, &["rollout", "status", &id], 16);
    s.run("oncall", &oncall, None, &["rollout", "approve", &id]);
    s.run(
        "alice",
        &alice,
        None,
        &["rollout", "status", &id, "--watch"],
    );
    lift_holds(&s, &alice, handle, &client);

    s.say("03:58", "Is everything healthy?");
    let (code, _) = s.run("alice", &alice, None, &["status"]);
    if args.keep {
        show(format!(
            "\nThe server keeps running at {} (admin token in {}); Ctrl-C ends it.",
            s.url,
            s.path("data/admin.token").display()
        ));
        handle.block_on(tokio::signal::ctrl_c())?;
    }
    Ok(if code == 0 { Exit::Ok } else { Exit::Problems })
}

/// Lifts every hold in force on the config (the break's own freeze, the acknowledged one).
fn lift_holds(
    s: &Stage,
    alice: &str,
    handle: &tokio::runtime::Handle,
    client: &locksmith_client::Client,
) {
    let holds = handle
        .block_on(client.holds())
        .map(|h| h.holds)
        .unwrap_or_default();
    for hold in holds.iter().filter(|h| h.record.resource == RESOURCE) {
        s.run(
            "alice",
            alice,
            None,
            &["unhold", &hold.record.hold.0.to_string()],
        );
    }
}

/// Alice writes `hotfix.conf` as a draft of the config (first under her stale token, later
/// under a current one).
fn put_hotfix_draft(s: &Stage, alice: &str) {
    s.run(
        "alice",
        alice,
        None,
        &[
            "config",
            "put",
            CONFIG,
            "hotfix.conf",
            "--draft",
            "-m",
            "safer update window",
        ],
    );
}
