//! `rollout start --dry-run`: the plan as text — each wave with its endpoints, the nodes left
//! out, each distinct diff (once per revision the endpoints run now), and the queue.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use locksmith_api::rollouts::{PlanWave, RolloutPlan, WaveKind};

use super::view::plain_table;

/// At most this many node names head a diff (`endpoints on rev 3 (a, b, c, …) get:`).
const NAMES_PER_DIFF: usize = 5;

pub fn plan_text(plan: &RolloutPlan) -> String {
    let spec = &plan.spec;
    let total: usize = plan.waves.iter().map(|w| w.endpoints.len()).sum();
    let mut s = String::new();
    let selector = if spec.selector.is_empty() {
        "every endpoint applying it".to_string()
    } else {
        let pairs: Vec<String> = spec
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!("selector {}", pairs.join(","))
    };
    let _ = writeln!(
        s,
        "dry run: {} revision {} to {total} endpoint{} ({selector}) in {} wave{}; nothing was stored",
        spec.config,
        spec.rev,
        plural(total),
        plan.waves.len(),
        plural(plan.waves.len())
    );
    for w in &plan.waves {
        let _ = writeln!(s);
        s.push_str(&wave_text(w));
    }
    let _ = writeln!(s);
    if plan.not_selected.is_empty() {
        let _ = writeln!(s, "not selected: none");
    } else {
        let _ = writeln!(
            s,
            "not selected (matched, left out by the plan): {}",
            plan.not_selected.join(", ")
        );
    }
    let on_rev = nodes_by_applied_rev(&plan.waves);
    for (from, diff) in &plan.diffs {
        let _ = writeln!(s);
        let nodes = from
            .parse::<u64>()
            .ok()
            .and_then(|rev| on_rev.get(&rev))
            .map_or(String::new(), |nodes| format!(" ({})", names(nodes)));
        let _ = match from.as_str() {
            "0" => writeln!(s, "endpoints with nothing applied yet{nodes} get:"),
            rev => writeln!(s, "endpoints on rev {rev}{nodes} get:"),
        };
        if diff.is_empty() {
            let _ = writeln!(s, "(no change)");
        } else {
            s.push_str(diff);
            if !diff.ends_with('\n') {
                s.push('\n');
            }
        }
    }
    let _ = writeln!(s);
    if plan.queued_behind.is_empty() {
        let _ = writeln!(
            s,
            "queue: none — it would start at once (no other rollout of {})",
            spec.config
        );
    } else {
        let _ = writeln!(
            s,
            "queue: it would wait behind {}",
            plan.queued_behind.join(", ")
        );
    }
    s
}

/// `wave 0 (canary): 3 endpoints, 0 failures allowed`, then NODE, ONLINE, APPLIED REV.
fn wave_text(w: &PlanWave) -> String {
    let kind = match w.kind {
        WaveKind::Canary => "canary",
        WaveKind::Wave => "wave",
    };
    let mut s = format!(
        "wave {} ({kind}): {} endpoint{}, {} failure{} allowed\n",
        w.index,
        w.endpoints.len(),
        plural(w.endpoints.len()),
        w.allowed_failures,
        plural(w.allowed_failures)
    );
    let mut table = plain_table(["  NODE", "ONLINE", "APPLIED REV"]);
    for e in &w.endpoints {
        table.add_row([
            format!("  {}", e.node),
            if e.online { "online" } else { "offline" }.to_string(),
            if e.applied_rev == 0 {
                "-".to_string()
            } else {
                e.applied_rev.to_string()
            },
        ]);
    }
    s.push_str(&table.trim_fmt());
    s.push('\n');
    s
}

/// The planned endpoints by the revision each runs now.
fn nodes_by_applied_rev(waves: &[PlanWave]) -> BTreeMap<u64, Vec<&str>> {
    let mut by_rev: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    for e in waves.iter().flat_map(|w| &w.endpoints) {
        by_rev.entry(e.applied_rev).or_default().push(&e.node);
    }
    by_rev
}

/// `a, b, c` or `a, b, c, d, e and 7 more`.
fn names(nodes: &[&str]) -> String {
    if nodes.len() <= NAMES_PER_DIFF {
        return nodes.join(", ");
    }
    format!(
        "{} and {} more",
        nodes[..NAMES_PER_DIFF].join(", "),
        nodes.len() - NAMES_PER_DIFF
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_api::rollouts::PlanEndpoint;
    use locksmith_api::rollouts::{RolloutSpec, StartRolloutRequest};

    fn endpoint(node: &str, online: bool, applied_rev: u64) -> PlanEndpoint {
        PlanEndpoint {
            node: node.into(),
            online,
            applied_rev,
        }
    }

    fn plan() -> RolloutPlan {
        let spec: RolloutSpec = StartRolloutRequest {
            config: "aim.conf".into(),
            rev: 4,
            selector: "role=drone".into(),
            canary: Some("1".into()),
            ..Default::default()
        }
        .to_spec("alice")
        .expect("valid");
        RolloutPlan {
            spec,
            waves: vec![
                PlanWave {
                    index: 0,
                    kind: WaveKind::Canary,
                    allowed_failures: 0,
                    endpoints: vec![endpoint("drone-1", true, 3)],
                },
                PlanWave {
                    index: 1,
                    kind: WaveKind::Wave,
                    allowed_failures: 1,
                    endpoints: vec![endpoint("drone-2", false, 3), endpoint("drone-3", true, 0)],
                },
            ],
            not_selected: vec!["drone-9".into()],
            diffs: BTreeMap::from([
                (
                    "3".into(),
                    "--- aim.conf rev 3\n+++ aim.conf rev 4\n-a = 1\n+a = 2\n".into(),
                ),
                ("0".into(), "+a = 2\n".into()),
            ]),
            queued_behind: vec!["ro-3".into()],
        }
    }

    #[test]
    fn the_plan_lists_waves_with_endpoints_then_left_out_nodes_diffs_and_queue() {
        let text = plan_text(&plan());
        let squeezed: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let at = |want: &str| {
            squeezed
                .iter()
                .position(|l| l == want)
                .unwrap_or_else(|| panic!("no line {want:?} in:\n{text}"))
        };
        assert!(squeezed[0].starts_with(
            "dry run: aim.conf revision 4 to 3 endpoints (selector role=drone) in 2 waves"
        ));
        let canary = at("wave 0 (canary): 1 endpoint, 0 failures allowed");
        assert_eq!(squeezed[canary + 1], "NODE ONLINE APPLIED REV");
        assert_eq!(squeezed[canary + 2], "drone-1 online 3");
        let wave = at("wave 1 (wave): 2 endpoints, 1 failure allowed");
        assert_eq!(squeezed[wave + 2], "drone-2 offline 3");
        assert_eq!(squeezed[wave + 3], "drone-3 online -");
        let left_out = at("not selected (matched, left out by the plan): drone-9");
        let nothing = at("endpoints with nothing applied yet (drone-3) get:");
        let on3 = at("endpoints on rev 3 (drone-1, drone-2) get:");
        assert_eq!(squeezed[on3 + 3], "-a = 1");
        let queue = at("queue: it would wait behind ro-3");
        assert!(
            canary < wave && wave < left_out && left_out < nothing && nothing < on3 && on3 < queue
        );
    }

    #[test]
    fn many_nodes_on_one_revision_are_named_five_then_counted() {
        let nodes = ["a", "b", "c", "d", "e", "f", "g"];
        assert_eq!(names(&nodes), "a, b, c, d, e and 2 more");
        assert_eq!(names(&nodes[..2]), "a, b");
    }
}
