//! `locksmith fleet ls|show` and `locksmith config shadow`: the endpoints running
//! `locksmith agent`, what each should run and what it reported; `fleet simulate` in
//! `simulate`.

mod simulate;

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use comfy_table::{ContentArrangement, Table, presets};
use locksmith_api::agents::{AgentView, ApplyState, EndpointConfig, ShadowRequest};
use locksmith_api::format_age;

use crate::cli::{ConfigShadowArgs, FleetCommand, FleetLsArgs, FleetShowArgs, Global};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{out, out_json};

pub async fn fleet(global: &Global, command: FleetCommand) -> anyhow::Result<Exit> {
    match command {
        FleetCommand::Ls(args) => ls(global, args).await,
        FleetCommand::Show(args) => show(global, args).await,
        FleetCommand::Simulate(args) => simulate::simulate(global, args).await,
    }
}

fn ctx(subject: &str) -> Context<'_> {
    Context {
        subject,
        wait_flag: "--wait",
    }
}

async fn ls(global: &Global, args: FleetLsArgs) -> anyhow::Result<Exit> {
    check_selector(&args.selector, "--selector")?;
    let fleet = super::client(global, ctx("fleet"))?
        .fleet(&args.selector)
        .await
        .map_err(|e| Failure::from_client(&e, ctx("fleet")))?;
    if args.json {
        out_json(&fleet)?;
    } else if fleet.agents.is_empty() {
        out("no endpoints (start `locksmith agent` on one, or widen --selector)")?;
    } else {
        out(&fleet_table(&fleet.agents, now_ms()))?;
    }
    Ok(Exit::Ok)
}

async fn show(global: &Global, args: FleetShowArgs) -> anyhow::Result<Exit> {
    let node = args.node.as_str();
    let view = super::client(global, ctx(node))?
        .fleet_node(node)
        .await
        .map_err(|e| Failure::from_client(&e, ctx(node)))?;
    if args.json {
        out_json(&view)?;
    } else {
        out(show_text(&view, now_ms()).trim_end())?;
    }
    Ok(Exit::Ok)
}

pub async fn shadow(global: &Global, args: ConfigShadowArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    check_selector(&args.selector, "--select")?;
    let req = ShadowRequest {
        rev: args.rev,
        selector: args.selector.clone(),
        nodes: args.nodes.clone(),
    };
    let sent = super::client(global, ctx(name))?
        .shadow_config(name, &req)
        .await
        .map_err(|e| Failure::from_client(&e, ctx(name)))?;
    if args.json {
        out_json(&sent)?;
    } else if sent.nodes.is_empty() {
        out(&format!(
            "{name}: revision {} sent as a shadow to no endpoint (none matches)",
            sent.rev
        ))?;
    } else {
        out(&format!(
            "{name}: revision {} sent as a shadow to {}; each reports shadow_ok or \
             shadow_failed with its diff: locksmith fleet show NODE",
            sent.rev,
            sent.nodes.join(", ")
        ))?;
    }
    Ok(Exit::Ok)
}

/// Refuses a selector that is not `k=v,k2=v2` before any round trip.
fn check_selector(selector: &str, flag: &str) -> Result<(), Failure> {
    super::agent::parse_labels(selector)
        .map(|_| ())
        .map_err(|e| Failure::invalid("fleet", flag, e, "select like role=drone,site=hangar-2"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `fleet ls`: NODE, LABELS, ONLINE, LAST SEEN, then one `CONFIG@REV STATE` per config.
pub fn fleet_table(agents: &[AgentView], now_ms: u64) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["NODE", "LABELS", "ONLINE", "LAST SEEN", "CONFIGS"]);
    for a in agents {
        let configs: Vec<String> = a.configs.iter().map(config_cell).collect();
        table.add_row([
            a.node.clone(),
            labels(a),
            if a.online { "online" } else { "offline" }.to_string(),
            format!("{} ago", format_age(now_ms.saturating_sub(a.last_seen_ms))),
            if configs.is_empty() {
                "-".to_string()
            } else {
                configs.join("  ")
            },
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

fn labels(a: &AgentView) -> String {
    if a.labels.is_empty() {
        return "-".to_string();
    }
    a.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `NAME@REV STATE`: the revision the last report is about and its state; `NAME -` with no
/// report yet (and `→N` when the desired revision is another).
fn config_cell(c: &EndpointConfig) -> String {
    let Some(r) = &c.report else {
        return match c.desired_rev {
            Some(d) => format!("{} → @{d} pending", c.config),
            None => format!("{} -", c.config),
        };
    };
    let mut cell = format!("{}@{} {}", c.config, r.rev, state_word(r.state));
    if let Some(d) = c.desired_rev
        && d != r.rev
        && !matches!(r.state, ApplyState::ShadowOk | ApplyState::ShadowFailed)
    {
        let _ = write!(cell, " (desired @{d})");
    }
    cell
}

fn state_word(s: ApplyState) -> &'static str {
    match s {
        ApplyState::Applied => "applied",
        ApplyState::Failed => "failed",
        ApplyState::Refused => "refused",
        ApplyState::Deferred => "deferred",
        ApplyState::ShadowOk => "shadow-ok",
        ApplyState::ShadowFailed => "shadow-failed",
    }
}

/// `fleet show NODE`: the endpoint, then each config's desired and applied revision, its last
/// report, error (a `lock mismatch` line for a refusal) and health metrics, and the last
/// shadow's outcome and diff, apart.
pub fn show_text(a: &AgentView, now_ms: u64) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "node:       {}", a.node);
    let _ = writeln!(s, "labels:     {}", labels(a));
    let _ = writeln!(
        s,
        "online:     {} (last seen {} ago)",
        if a.online { "yes" } else { "no" },
        format_age(now_ms.saturating_sub(a.last_seen_ms))
    );
    let _ = writeln!(s, "agent:      {} (boot {})", a.version, a.boot_id);
    for c in &a.configs {
        let _ = writeln!(s);
        let _ = writeln!(s, "config {}", c.config);
        let desired = c.desired_rev.map_or("-".to_string(), |d| d.to_string());
        let _ = writeln!(s, "  desired:  {desired}");
        let Some(r) = &c.report else {
            let _ = writeln!(s, "  report:   none yet");
            continue;
        };
        let age = c
            .reported_at_ms
            .map(|t| format!(" ({} ago)", format_age(now_ms.saturating_sub(t))))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "  report:   revision {} {}{age}",
            r.rev,
            state_word(r.state)
        );
        let _ = writeln!(
            s,
            "  applied:  revision {} (token {})",
            r.applied_rev, r.applied_token
        );
        if let Some(ms) = r.received_to_applied_ms {
            let _ = writeln!(s, "  took:     {ms} ms from receiving it");
        }
        if let Some(e) = &r.error {
            let _ = writeln!(s, "  error:    {e}");
        }
        if !r.metrics.is_empty() {
            let pairs: Vec<String> = r.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(s, "  metrics:  {}", pairs.join(" "));
        }
        if let Some(shadow) = &c.shadow_report {
            let _ = writeln!(
                s,
                "  shadow:   revision {} {} (never activated)",
                shadow.rev,
                state_word(shadow.state)
            );
            if let Some(e) = &shadow.error {
                let _ = writeln!(s, "    error:  {e}");
            }
            if let Some(diff) = &shadow.diff {
                let _ = writeln!(s, "    diff:");
                for line in diff.lines() {
                    let _ = writeln!(s, "      {line}");
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_api::agents::AgentReport;
    use std::collections::BTreeMap;

    fn view() -> AgentView {
        AgentView {
            node: "drone-7".into(),
            labels: BTreeMap::from([("role".into(), "drone".into())]),
            boot_id: "b".into(),
            version: "0.1.0".into(),
            online: true,
            last_seen_ms: 1_000,
            registered_at_ms: 0,
            configs: vec![EndpointConfig {
                config: "aim.conf".into(),
                desired_rev: Some(4),
                report: Some(AgentReport {
                    config: "aim.conf".into(),
                    rev: 3,
                    state: ApplyState::Refused,
                    applied_rev: 2,
                    applied_token: 5,
                    error: Some("lock mismatch: aim.conf HOT — …".into()),
                    received_to_applied_ms: None,
                    diff: None,
                    metrics: Default::default(),
                }),
                reported_at_ms: Some(2_000),
                shadow_report: None,
            }],
        }
    }

    #[test]
    fn fleet_ls_shows_one_row_per_node_with_each_configs_revision_and_state() {
        let table = fleet_table(&[view()], 4_000);
        let mut lines = table.lines();
        let header = lines.next().expect("header");
        for col in ["NODE", "LABELS", "ONLINE", "LAST SEEN", "CONFIGS"] {
            assert!(header.contains(col), "{header}");
        }
        let row = lines.next().expect("row");
        assert!(
            row.contains("drone-7") && row.contains("role=drone"),
            "{row}"
        );
        assert!(row.contains("online") && row.contains("3s ago"), "{row}");
        assert!(row.contains("aim.conf@3 refused (desired @4)"), "{row}");
    }

    #[test]
    fn fleet_show_gives_the_refusal_line() {
        let text = show_text(&view(), 4_000);
        assert!(
            text.contains("error:    lock mismatch: aim.conf HOT"),
            "{text}"
        );
        assert!(text.contains("applied:  revision 2 (token 5)"), "{text}");
        assert!(!text.contains("metrics:"), "{text}");
    }

    #[test]
    fn fleet_show_gives_the_health_hooks_metrics() {
        let mut v = view();
        if let Some(r) = v.configs[0].report.as_mut() {
            r.state = ApplyState::Applied;
            r.metrics = BTreeMap::from([("error_rate".into(), 0.002), ("p99_ms".into(), 12.0)]);
        }
        let text = show_text(&v, 4_000);
        assert!(
            text.contains("metrics:  error_rate=0.002 p99_ms=12\n"),
            "{text}"
        );
    }
}
