//! `rollout start`: checks the flags locally, then either asks for the plan (`--dry-run`,
//! nothing stored) or starts the rollout and says where it stands and what to run next.

use locksmith_api::rollouts::{RolloutPhase, RolloutView};

use super::plan::plan_text;
use super::request::{check, request_of};
use super::view::revision;
use super::{check_config, client_for, failure};
use crate::cli::{Global, RolloutStartArgs};
use crate::exit::Exit;
use crate::output::{out, out_json};

pub async fn start(global: &Global, args: RolloutStartArgs) -> anyhow::Result<Exit> {
    let name = args.config.as_str();
    check_config(name)?;
    let req = request_of(&args);
    check(&req)?;
    let client = client_for(global, name)?;
    if args.dry_run {
        let plan = client
            .plan_rollout(&req)
            .await
            .map_err(|e| failure(&e, name, "check the config and the flags"))?;
        if args.json {
            out_json(&plan)?;
        } else {
            out(plan_text(&plan).trim_end())?;
        }
        return Ok(Exit::Ok);
    }
    let view = client
        .start_rollout(&req)
        .await
        .map_err(|e| failure(&e, name, "check the config and the flags"))?;
    if args.json {
        out_json(&view)?;
    } else {
        out(&started_text(&view))?;
    }
    Ok(Exit::Ok)
}

/// `ro-4: started aim.conf revision 4 — applying wave 0 of 3`, or queued behind whom, then
/// the command that follows it.
pub fn started_text(view: &RolloutView) -> String {
    let first = match view.phase {
        RolloutPhase::Queued => format!(
            "{}: queued {} {} behind {} — {}; cancel it with: locksmith rollout cancel {}",
            view.id,
            view.config,
            revision(view),
            if view.queued_behind.is_empty() {
                "the config's lock".to_string()
            } else {
                view.queued_behind.join(", ")
            },
            view.summary,
            view.id
        ),
        _ => format!(
            "{}: started {} {} — {}",
            view.id,
            view.config,
            revision(view),
            view.summary
        ),
    };
    format!(
        "{first}\nfollow it: locksmith rollout status {} --watch",
        view.id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::rollout::view::tests::view;

    #[test]
    fn a_started_rollout_says_where_it_is_and_how_to_follow_it() {
        let mut v = view(3);
        v.summary = "applying wave 0 of 2".into();
        assert_eq!(
            started_text(&v),
            "ro-4: started aim.conf revision 4 (sent as 7) — applying wave 0 of 2\n\
             follow it: locksmith rollout status ro-4 --watch"
        );
    }

    #[test]
    fn a_queued_rollout_names_what_it_waits_behind_and_how_to_cancel_it() {
        let mut v = view(3);
        v.id = "ro-5".into();
        v.phase = RolloutPhase::Queued;
        v.rolled_rev = None;
        v.queued_behind = vec!["ro-4".into()];
        v.summary = "queued behind ro-4".into();
        let text = started_text(&v);
        assert_eq!(
            text.lines().next(),
            Some(
                "ro-5: queued aim.conf revision 4 behind ro-4 — queued behind ro-4; cancel it \
                 with: locksmith rollout cancel ro-5"
            )
        );
        assert!(text.ends_with("follow it: locksmith rollout status ro-5 --watch"));
    }
}
