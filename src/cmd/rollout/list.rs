//! `rollout ls [CONFIG] [--all]` and `rollout history CONFIG`: one row per rollout, newest
//! first (the server's order).

use locksmith_api::format_age;
use locksmith_api::rollouts::RolloutView;

use super::view::{plain_table, state_cell};
use super::{check_config, client_for, failure, now_ms};
use crate::cli::{Global, RolloutHistoryArgs, RolloutLsArgs};
use crate::exit::Exit;
use crate::output::{out, out_json};

pub async fn ls(global: &Global, args: RolloutLsArgs) -> anyhow::Result<Exit> {
    let subject = args.config.as_deref().unwrap_or("rollouts");
    if let Some(name) = &args.config {
        check_config(name)?;
    }
    let list = client_for(global, subject)?
        .rollouts(args.config.as_deref(), args.all)
        .await
        .map_err(|e| failure(&e, subject, "check --server and the token"))?;
    if args.json {
        out_json(&list)?;
    } else if list.rollouts.is_empty() {
        let what = if args.all {
            "no rollouts"
        } else {
            "no running or queued rollouts"
        };
        let of = args
            .config
            .as_deref()
            .map_or(String::new(), |c| format!(" of {c}"));
        out(&format!(
            "{what}{of} (start one: locksmith rollout start CONFIG --rev N{})",
            if args.all {
                ""
            } else {
                "; --all lists ended ones"
            }
        ))?;
    } else {
        out(&ls_table(&list.rollouts, now_ms()))?;
    }
    Ok(Exit::Ok)
}

pub async fn history(global: &Global, args: RolloutHistoryArgs) -> anyhow::Result<Exit> {
    let name = args.config.as_str();
    check_config(name)?;
    let list = client_for(global, name)?
        .rollouts(Some(name), true)
        .await
        .map_err(|e| failure(&e, name, "check the config's name"))?;
    if args.json {
        out_json(&list)?;
    } else if list.rollouts.is_empty() {
        out(&format!(
            "{name}: never rolled out (start one: locksmith rollout start {name} --rev N)"
        ))?;
    } else {
        out(&history_table(&list.rollouts, now_ms()))?;
    }
    Ok(Exit::Ok)
}

/// ID, CONFIG, REV, STATE, SUMMARY, STARTER, AGE.
pub fn ls_table(rollouts: &[RolloutView], now_ms: u64) -> String {
    let mut table = plain_table(["ID", "CONFIG", "REV", "STATE", "SUMMARY", "STARTER", "AGE"]);
    for r in rollouts {
        table.add_row([
            r.id.clone(),
            r.config.clone(),
            r.rev.to_string(),
            state_cell(r),
            r.summary.clone(),
            r.starter.clone(),
            format_age(now_ms.saturating_sub(r.created_ms)),
        ]);
    }
    table.trim_fmt()
}

/// ID, REV, STARTER, STARTED, OUTCOME, WHY: how each ended (or where it is, while it runs).
pub fn history_table(rollouts: &[RolloutView], now_ms: u64) -> String {
    let mut table = plain_table(["ID", "REV", "STARTER", "STARTED", "OUTCOME", "WHY"]);
    for r in rollouts {
        let why = r
            .outcome
            .as_ref()
            .and_then(|o| o.why.clone())
            .unwrap_or_else(|| r.summary.clone());
        table.add_row([
            r.id.clone(),
            r.rev.to_string(),
            r.starter.clone(),
            format!("{} ago", format_age(now_ms.saturating_sub(r.created_ms))),
            state_cell(r),
            why,
        ]);
    }
    table.trim_fmt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::rollout::view::tests::view;
    use locksmith_api::rollouts::{Outcome, OutcomeKind, RolloutPhase};

    fn squeezed(text: &str) -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }

    #[test]
    fn ls_gives_one_row_per_rollout_with_its_state_and_age() {
        let mut queued = view(3);
        queued.id = "ro-5".into();
        queued.phase = RolloutPhase::Queued;
        queued.summary = "queued behind ro-4".into();
        queued.created_ms = 60_000;
        let rows = squeezed(&ls_table(&[queued, view(3)], 90_000));
        assert_eq!(rows[0], "ID CONFIG REV STATE SUMMARY STARTER AGE");
        assert_eq!(
            rows[1],
            "ro-5 aim.conf 4 queued queued behind ro-4 alice 30s"
        );
        assert!(
            rows[2].starts_with("ro-4 aim.conf 4 running awaiting approval"),
            "{rows:?}"
        );
    }

    #[test]
    fn history_gives_each_outcome_and_why() {
        let mut ended = view(3);
        ended.id = "ro-3".into();
        ended.phase = RolloutPhase::Ended;
        ended.outcome = Some(Outcome {
            kind: OutcomeKind::RolledBack,
            why: Some("wave 0 failed: 1 of 3 failed, 0 allowed".into()),
            endpoints: Vec::new(),
        });
        let mut cancelled = view(3);
        cancelled.id = "ro-2".into();
        cancelled.phase = RolloutPhase::Cancelled;
        cancelled.summary = "cancelled by bob".into();
        let rows = squeezed(&history_table(&[view(3), ended, cancelled], 5_000));
        assert_eq!(rows[0], "ID REV STARTER STARTED OUTCOME WHY");
        assert!(
            rows[1].starts_with("ro-4 4 alice 5s ago running "),
            "{rows:?}"
        );
        assert_eq!(
            rows[2],
            "ro-3 4 alice 5s ago ROLLED BACK wave 0 failed: 1 of 3 failed, 0 allowed"
        );
        assert_eq!(rows[3], "ro-2 4 alice 5s ago cancelled cancelled by bob");
    }
}
