//! `locksmith demo` end to end: the real binary replays the incident against its own server
//! and a simulated fleet, and every turn of the story shows in its output, ending in
//! ALL CLEAR (exit 0).

mod common;

use std::time::Duration;

use common::{code, describe, output_within, stdout};

#[test]
fn the_demo_replays_the_incident_and_ends_in_all_clear() {
    let mut cmd = common::command(&["demo", "--fast", "--agents", "40"]);
    cmd.env_remove("LOCKSMITH_TOKEN");
    let out = output_within(cmd, Duration::from_secs(300));
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    for line in [
        "40 of 40 endpoints applied revision 1",
        "ERROR: configs/aim_lock_config.conf: HOT — held by tester@node-7",
        "alive?        not checkable from here (holder on node-7)",
        "lock mismatch: aim_lock_config.conf HOT",
        "acknowledged by oncall@ops",
        "broke configs/aim_lock_config.conf: revoked lease",
        "fence is now",
        "ro-1: approved",
        "SUCCEEDED",
        "ALL CLEAR",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
}
