//! The start flags as the request the server takes, and the local check: the same
//! `StartRolloutRequest::to_spec` the server runs, so a bad value fails before any network
//! call with the server's own words (which name the flag).

use locksmith_api::rollouts::{RolloutSpec, StartRolloutRequest};

use crate::cli::RolloutStartArgs;
use crate::failure::Failure;

/// Each flag into its field, as typed (the server parses the text; see the module doc).
pub fn request_of(args: &RolloutStartArgs) -> StartRolloutRequest {
    StartRolloutRequest {
        config: args.config.clone(),
        rev: args.rev,
        selector: args.selector.clone(),
        canary: args.canary.clone(),
        canary_nodes: args.canary_nodes.clone(),
        waves: args.waves.clone(),
        linear: args.linear.clone(),
        exponential: args.exponential.clone(),
        bake: args.bake.clone(),
        max_failures: args.max_failures.clone(),
        hold_after: args.hold_after.clone(),
        approvals: args.approvals,
        on_failure: args.on_failure.clone(),
        windows: args.windows.clone(),
        deadline: args.deadline.clone(),
        urgent: args.urgent,
        gates: args.gates.clone(),
        min_samples: args.min_samples,
        allow_no_data: args.allow_no_data,
    }
}

/// The spec `req` makes, or the one-line failure naming the flag. The starter is the server's
/// to know (the token's name); no rule of the spec depends on it.
pub fn check(req: &StartRolloutRequest) -> Result<RolloutSpec, Failure> {
    req.to_spec("-").map_err(|e| {
        Failure::invalid(
            &req.config,
            "rollout",
            e,
            "fix the flag and retry (see 'locksmith rollout start --help')",
        )
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command, RolloutCommand};
    use crate::exit::Exit;

    /// `locksmith rollout start ARGS…` as clap parses it.
    fn start_args(args: &[&str]) -> RolloutStartArgs {
        let argv = ["locksmith", "rollout", "start"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Rollout(RolloutCommand::Start(args)) => *args,
            other => panic!("not rollout start: {other:?}"),
        }
    }

    #[test]
    fn every_flag_lands_in_its_field_as_typed() {
        let args = start_args(&[
            "aim.conf",
            "--rev",
            "4",
            "--select",
            "role=drone",
            "--canary",
            "3",
            "--waves",
            "10%,50%,100%",
            "--bake",
            "60s",
            "--max-failures",
            "5%",
            "--hold-after",
            "canary",
            "--approvals",
            "2",
            "--on-failure",
            "freeze",
            "--window",
            "02:00-04:00",
            "--window",
            "site=eu@22:00-01:00",
            "--deadline",
            "30m",
            "--urgent",
            "--gate",
            "error_rate < 0.01",
            "--gate",
            "prom:up < 2",
            "--min-samples",
            "3",
            "--allow-no-data",
        ]);
        let want = StartRolloutRequest {
            config: "aim.conf".into(),
            rev: 4,
            selector: "role=drone".into(),
            canary: Some("3".into()),
            canary_nodes: None,
            waves: Some("10%,50%,100%".into()),
            linear: None,
            exponential: None,
            bake: Some("60s".into()),
            max_failures: Some("5%".into()),
            hold_after: Some("canary".into()),
            approvals: 2,
            on_failure: Some("freeze".into()),
            windows: vec!["02:00-04:00".into(), "site=eu@22:00-01:00".into()],
            deadline: Some("30m".into()),
            urgent: true,
            gates: vec!["error_rate < 0.01".into(), "prom:up < 2".into()],
            min_samples: Some(3),
            allow_no_data: true,
        };
        let req = request_of(&args);
        assert_eq!(req, want);
        let spec = check(&req).expect("valid");
        assert_eq!(spec.approvals, 2);
        assert_eq!(spec.windows.len(), 2);
        assert_eq!(spec.gates.len(), 2);
    }

    #[test]
    fn flags_left_out_are_left_out_of_the_request() {
        let args = start_args(&["aim.conf", "--rev", "4"]);
        assert_eq!(
            request_of(&args),
            StartRolloutRequest {
                config: "aim.conf".into(),
                rev: 4,
                ..Default::default()
            }
        );
        let args = start_args(&[
            "aim.conf",
            "--rev",
            "4",
            "--canary-nodes",
            "a,b",
            "--exponential",
            "2x",
        ]);
        let req = request_of(&args);
        assert_eq!(req.canary_nodes.as_deref(), Some("a,b"));
        assert_eq!(req.exponential.as_deref(), Some("2x"));
        assert_eq!(
            (&req.canary, &req.waves, &req.linear),
            (&None, &None, &None)
        );
        check(&req).expect("valid");
    }

    #[test]
    fn a_bad_value_fails_locally_naming_the_flag_with_the_servers_words() {
        for (flags, flag) in [
            (&["--waves", "50%,10%"][..], "--waves"),
            (&["--linear", "20%", "--waves", "50%,100%"][..], "--linear"),
            (&["--bake", "soon"][..], "--bake"),
            (
                &["--hold-after", "canary", "--approvals", "1"][..],
                "--canary",
            ),
            (&["--window", "25:00-26:00"][..], "--window"),
        ] {
            let mut argv = vec!["aim.conf", "--rev", "4"];
            argv.extend_from_slice(flags);
            let req = request_of(&start_args(&argv));
            let server = req.to_spec("alice").expect_err("invalid").to_string();
            let f = check(&req).expect_err("refused");
            assert_eq!(f.exit, Exit::Other);
            assert!(
                f.line.starts_with("aim.conf: invalid rollout — "),
                "{}",
                f.line
            );
            assert!(f.line.contains(&server), "{} lacks {server}", f.line);
            assert!(f.line.contains(flag), "{} lacks {flag}", f.line);
        }
    }
}
