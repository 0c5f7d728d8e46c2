//! The config store from the command line (issue 18): the real `locksmith` binary against a
//! real `locksmith server` with authentication on — put/get round trips with the provenance
//! stamp, the incident's `aim_lock_config.conf` under a schema, history, diff, drafts,
//! promotion and rollback, writes under a lease taken with `acquire` and refused once the lock
//! changed hands, validation, non-UTF-8 and binary content, and the `--json` shapes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{ServerProc, code, describe, one_error_line, stderr, stdout};
use serde_json::Value;

/// The incident's config: the fleet reads it, the lock exists to protect it. Line 4 is the
/// threshold the bad edit pushed past 1.
const AIM_GOOD: &str = "# aim lock config for the fleet\n\
                        mode = \"strict\"\n\
                        max_drones = 40\n\
                        safety_threshold = 0.5\n";
const AIM_BAD: &str = "# aim lock config for the fleet\n\
                       mode = \"strict\"\n\
                       max_drones = 40\n\
                       safety_threshold = 1.7\n";
const AIM_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "mode": { "enum": ["strict", "lenient"] },
    "max_drones": { "type": "integer", "minimum": 1 },
    "safety_threshold": { "type": "number", "minimum": 0, "maximum": 1 }
  },
  "required": ["mode", "safety_threshold"]
}"#;

struct Env {
    dir: tempfile::TempDir,
    server: ServerProc,
}

impl Env {
    fn start() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = ServerProc::start(&dir.path().join("data"));
        Env { dir, server }
    }

    /// Writes `bytes` to a file called `name` in the test's directory.
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write file");
        path
    }

    /// `locksmith --node node-7 ARGS` (the node recorded as the writer's).
    fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["--node", "node-7"];
        all.extend_from_slice(args);
        self.server.cli(&all)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.cli(args);
        assert_eq!(code(&out), 0, "{args:?}: {}", describe(&out));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", describe(&out)))
    }
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn put_then_get_round_trips_the_bytes_and_stamps_the_provenance() {
    let env = Env::start();
    let file = env.file("aim_lock_config.conf", AIM_GOOD.as_bytes());
    // A name with `/` travels as one path segment.
    let name = "fleet/aim_lock_config.conf";
    let out = env.ok(&["config", "put", name, p(&file), "-m", "first"]);
    let line = stdout(&out);
    assert!(
        line.starts_with("fleet/aim_lock_config.conf: rev 1 written, now current — token "),
        "{line}"
    );
    assert!(line.contains(", by admin"), "{line}");

    let out = env.ok(&["config", "get", name]);
    assert_eq!(out.stdout, AIM_GOOD.as_bytes(), "{}", describe(&out));

    let out = env.ok(&["config", "get", name, "--stamp"]);
    let text = stdout(&out);
    let (stamp, rest) = text.split_once('\n').expect("two lines at least");
    assert!(
        stamp.starts_with("# locksmith: fleet/aim_lock_config.conf rev 1 by admin@node-7 "),
        "{stamp}"
    );
    assert!(stamp.contains(" token "), "{stamp}");
    assert_eq!(rest, AIM_GOOD);

    // The command took configs/NAME for the write and gave it back.
    assert_eq!(
        env.server.state("configs/fleet/aim_lock_config.conf"),
        "FREE"
    );
}

#[test]
fn the_incidents_config_under_a_schema_refuses_a_bad_value_naming_its_line() {
    let env = Env::start();
    let name = "aim_lock_config.conf";
    let schema = env.file("aim.schema.json", AIM_SCHEMA.as_bytes());
    let out = env.ok(&["config", "schema", "set", name, p(&schema)]);
    assert!(stdout(&out).starts_with("aim_lock_config.conf: schema set (sha256 "));
    let got = env.json(&["config", "schema", "get", name]);
    assert_eq!(got["properties"]["safety_threshold"]["maximum"], 1, "{got}");

    let bad = env.file("aim_lock_config.conf", AIM_BAD.as_bytes());
    let out = env.cli(&["config", "put", name, p(&bad), "-m", "raise it"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.contains(
            "INVALID — safety_threshold: 1.7 is greater than the maximum of 1 (line 4); \
             nothing was stored"
        ),
        "{line}"
    );
    // Nothing stored, and the lock taken for the write is released even so.
    let history = env.json(&["config", "history", name, "--json"]);
    assert_eq!(history["head"]["latest"], 0, "{history}");
    assert_eq!(env.server.state("configs/aim_lock_config.conf"), "FREE");

    let good = env.file("aim_lock_config.conf", AIM_GOOD.as_bytes());
    env.ok(&["config", "put", name, p(&good)]);
}

#[test]
fn validate_passes_a_good_file_and_lists_each_problem_with_its_line() {
    let env = Env::start();
    let name = "aim_lock_config.conf";
    let schema = env.file("aim.schema.json", AIM_SCHEMA.as_bytes());
    env.ok(&["config", "schema", "set", name, p(&schema)]);

    let good = env.file("aim_lock_config.conf", AIM_GOOD.as_bytes());
    let out = env.ok(&["config", "validate", name, p(&good)]);
    assert!(
        stdout(&out)
            .contains(": VALID — as conf for aim_lock_config.conf it parses and passes its schema"),
        "{}",
        describe(&out)
    );

    let bad = env.file(
        "two-problems.conf",
        b"mode = \"wild\"\nmax_drones = 40\nsafety_threshold = 1.7\n",
    );
    let out = env.cli(&["config", "validate", name, p(&bad)]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let problems = stdout(&out);
    let lines: Vec<&str> = problems.lines().collect();
    assert_eq!(lines.len(), 2, "{problems}");
    let file = p(&bad);
    assert!(
        lines.contains(
            &format!(
                "{file}: INVALID — safety_threshold: 1.7 is greater than the maximum of 1 (line 3)"
            )
            .as_str()
        ),
        "{problems}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{file}: INVALID — mode: ")) && l.ends_with("(line 1)")),
        "{problems}"
    );
    let line = one_error_line(&out);
    assert!(
        line.ends_with(&format!(
            "aim_lock_config.conf: INVALID — {file} has 2 problems (listed above); a put of it \
             would be refused: fix it and validate again"
        )),
        "{line}"
    );

    let out = env.cli(&["config", "validate", name, p(&bad), "--json"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let verdict: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(verdict["valid"], false, "{verdict}");
    assert_eq!(
        verdict["violations"].as_array().map(Vec::len),
        Some(2),
        "{verdict}"
    );
    // Nothing was written by validating.
    let out = env.cli(&["config", "get", name]);
    assert_ne!(code(&out), 0, "{}", describe(&out));
}

#[test]
fn history_diff_promote_of_a_draft_and_rollback() {
    let env = Env::start();
    let name = "aim_lock_config.conf";
    let v1 = env.file("v1.conf", AIM_GOOD.as_bytes());
    let v2 = env.file("v2.conf", AIM_GOOD.replace("0.5", "0.6").as_bytes());
    let v3 = env.file("v3.conf", AIM_GOOD.replace("40", "48").as_bytes());
    env.ok(&["config", "put", name, p(&v1), "-m", "first"]);
    env.ok(&["config", "put", name, p(&v2), "-m", "tighter"]);
    let out = env.ok(&[
        "config",
        "put",
        name,
        p(&v3),
        "--draft",
        "-m",
        "more drones",
    ]);
    assert!(
        stdout(&out).contains("rev 3 written as a DRAFT (rev 2 stays current) — token ")
            && stdout(&out).trim_end().ends_with(
                "; make it current with 'locksmith config promote aim_lock_config.conf --rev 3'"
            ),
        "{}",
        describe(&out)
    );
    // The draft is readable but not what readers get.
    assert_eq!(
        env.ok(&["config", "get", name, "--rev", "3"]).stdout,
        std::fs::read(&v3).expect("v3")
    );
    assert_eq!(
        env.ok(&["config", "get", name]).stdout,
        std::fs::read(&v2).expect("v2")
    );

    let out = env.ok(&["config", "diff", name, "1", "2"]);
    let diff = stdout(&out);
    assert!(
        diff.contains("-safety_threshold = 0.5\n+safety_threshold = 0.6\n"),
        "{diff}"
    );

    env.ok(&[
        "config",
        "promote",
        name,
        "--rev",
        "3",
        "-m",
        "canary was fine",
    ]);
    assert_eq!(
        env.ok(&["config", "get", name]).stdout,
        std::fs::read(&v3).expect("v3")
    );
    let out = env.ok(&[
        "config",
        "rollback",
        name,
        "--to",
        "1",
        "-m",
        "back to the known good",
    ]);
    assert!(
        stdout(&out)
            .starts_with("aim_lock_config.conf: rev 5 rolled back to rev 1, now current — "),
        "{}",
        describe(&out)
    );
    assert_eq!(env.ok(&["config", "get", name]).stdout, AIM_GOOD.as_bytes());

    let table = stdout(&env.ok(&["config", "history", name]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "REV", "STATE", "KIND", "AUTHOR", "OWNER", "TOKEN", "WHEN", "SIZE", "SHA256", "MESSAGE"
        ]
    );
    assert!(
        lines[3].starts_with("3 ") && lines[3].contains(" draft "),
        "{table}"
    );
    assert!(lines[4].contains("promotion of 3"), "{table}");
    assert!(
        lines[5].contains(" current ") && lines[5].contains("rollback of 1"),
        "{table}"
    );
    // The store's own words lead the message of a rollback (`roll back to rev 1`).
    assert!(lines[5].contains("roll back to rev 1"), "{table}");

    // Promoting what is not a draft is refused with one line.
    let out = env.cli(&["config", "promote", name, "--rev", "2"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        one_error_line(&out).contains("NOT A DRAFT"),
        "{}",
        describe(&out)
    );

    let ls = stdout(&env.ok(&["config", "ls"]));
    let row: Vec<&str> = ls
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..5],
        ["aim_lock_config.conf", "conf", "5", "5", "-"],
        "{ls}"
    );
}

/// `locksmith acquire configs/NAME --json`'s lease and token.
fn acquire(env: &Env, resource: &str) -> (String, String) {
    let lease = env.json(&["acquire", resource, "--ttl", "60s", "--json"]);
    (lease["lease"].to_string(), lease["token"].to_string())
}

#[test]
fn a_put_under_an_acquired_lease_lands_and_its_token_is_refused_once_the_lock_changed_hands() {
    let env = Env::start();
    let name = "aim_lock_config.conf";
    let resource = "configs/aim_lock_config.conf";
    let file = env.file("aim_lock_config.conf", AIM_GOOD.as_bytes());
    let (lease, token) = acquire(&env, resource);
    let written = env.json(&[
        "config",
        "put",
        name,
        p(&file),
        "--lease",
        &lease,
        "--fence-token",
        &token,
        "--json",
    ]);
    assert_eq!(written["token"].to_string(), token, "{written}");
    assert_eq!(written["rev"], 1, "{written}");
    // The caller's lease is the caller's: the put did not release it.
    assert_eq!(env.server.state(resource), "HOT");

    // The lock changes hands: released, then taken by someone else.
    env.ok(&["release", &lease]);
    let (new_lease, new_token) = acquire(&env, resource);
    assert_ne!(new_token, token);

    let out = env.cli(&[
        "config",
        "put",
        name,
        p(&file),
        "--lease",
        &lease,
        "--fence-token",
        &token,
    ]);
    assert_eq!(code(&out), 4, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with(&format!(
            "ERROR: {name}: LEASE ENDED — lease {lease} token {token} may not write it: "
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("{resource} is held now by tester@node-7")),
        "{line}"
    );
    assert!(
        line.contains(&format!("with lease {new_lease} token {new_token}")),
        "{line}"
    );
    assert!(line.ends_with(&format!("nothing was stored; acquire {resource} again ('locksmith acquire {resource} --json') and retry with its --lease and --fence-token")), "{line}");

    // The live lease with the old token: a stale token.
    let out = env.cli(&[
        "config",
        "put",
        name,
        p(&file),
        "--lease",
        &new_lease,
        "--fence-token",
        &token,
    ]);
    assert_eq!(code(&out), 4, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("STALE TOKEN"), "{line}");
    assert!(line.contains(&format!("token {new_token}")), "{line}");
    let history = env.json(&["config", "history", name, "--json"]);
    assert_eq!(history["head"]["latest"], 1, "{history}");

    // Without --lease the put waits for the lock; with --wait 0 it is refused as HOT.
    let out = env.cli(&["config", "put", name, p(&file), "--wait", "0s"]);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    assert!(
        one_error_line(&out).contains("configs/aim_lock_config.conf: HOT"),
        "{}",
        describe(&out)
    );
}

#[test]
fn non_utf8_content_as_conf_is_refused_naming_line_and_column() {
    let env = Env::start();
    let file = env.file("latin1.conf", b"mode = \"strict\"\nowner = \"J\xf6rg\"\n");
    let out = env.cli(&["config", "put", "latin1.conf", p(&file)]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.contains("INVALID — line 2, column 11: "), "{line}");
    let out = env.cli(&["config", "get", "latin1.conf"]);
    assert_ne!(code(&out), 0);
}

#[test]
fn raw_binary_bytes_round_trip_exactly() {
    let env = Env::start();
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, b'\n', 0xc3]).collect();
    let file = env.file("firmware.bin", &bytes);
    let written = env.json(&["config", "put", "fw/firmware.bin", p(&file), "--json"]);
    assert_eq!(written["format"], "raw", "{written}");
    assert_eq!(written["size"], bytes.len(), "{written}");
    let out = env.ok(&["config", "get", "fw/firmware.bin"]);
    assert_eq!(out.stdout, bytes);
    let got = env.json(&["config", "get", "fw/firmware.bin", "--json"]);
    assert!(got["content_base64"].is_string(), "{got}");
    assert!(got.get("content").is_none(), "{got}");
}

#[test]
fn json_shapes_of_every_command() {
    let env = Env::start();
    let name = "aim_lock_config.conf";
    let v1 = env.file("v1.conf", AIM_GOOD.as_bytes());
    let v2 = env.file("v2.conf", AIM_GOOD.replace("40", "41").as_bytes());
    let written = env.json(&["config", "put", name, p(&v1), "-m", "first", "--json"]);
    for key in [
        "name",
        "rev",
        "sha256",
        "size",
        "format",
        "message",
        "author",
        "owner",
        "owner_node",
        "at_ms",
        "token",
        "draft",
        "kind",
        "current",
    ] {
        assert!(written.get(key).is_some(), "{key} missing: {written}");
    }
    assert_eq!(written["owner_node"], "node-7", "{written}");
    assert_eq!(written["author"]["name"], "admin", "{written}");
    env.json(&["config", "put", name, p(&v2), "--json"]);

    let got = env.json(&["config", "get", name, "--json"]);
    assert_eq!(got["rev"], 2, "{got}");
    assert_eq!(got["current"], true, "{got}");
    assert!(
        got["content"]
            .as_str()
            .is_some_and(|c| c.contains("max_drones = 41")),
        "{got}"
    );

    let history = env.json(&["config", "history", name, "--json"]);
    assert_eq!(history["head"]["current"], 2, "{history}");
    assert_eq!(
        history["revisions"].as_array().map(Vec::len),
        Some(2),
        "{history}"
    );

    let diff = env.json(&["config", "diff", name, "1", "2", "--json"]);
    assert_eq!(
        (diff["from"].as_u64(), diff["to"].as_u64()),
        (Some(1), Some(2)),
        "{diff}"
    );
    assert!(
        diff["diff"]
            .as_str()
            .is_some_and(|d| d.contains("+max_drones = 41")),
        "{diff}"
    );

    let listed = env.json(&["config", "ls", "--json"]);
    assert_eq!(listed["configs"][0]["name"], name, "{listed}");
    assert_eq!(
        listed["configs"][0]["current_revision"]["rev"], 2,
        "{listed}"
    );

    let valid = env.json(&["config", "validate", name, p(&v1), "--json"]);
    assert_eq!(valid["valid"], true, "{valid}");
    assert_eq!(valid["schema_checked"], false, "{valid}");

    let rolled = env.json(&["config", "rollback", name, "--to", "1", "--json"]);
    assert_eq!(rolled["kind"], "rolled_back", "{rolled}");
    assert_eq!(rolled["from"], 1, "{rolled}");

    // A config that does not exist: one line, naming it and how to make it.
    let out = env.cli(&["config", "get", "nope.conf"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        one_error_line(&out).starts_with("ERROR: nope.conf: NOT FOUND — "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_put_under_a_broken_lease_is_refused_naming_the_operator_and_the_next_step() {
    let env = Env::start();
    let name = "aim_lock_config.conf";
    let resource = "configs/aim_lock_config.conf";
    let file = env.file("aim_lock_config.conf", AIM_GOOD.as_bytes());
    let (lease, token) = acquire(&env, resource);
    env.ok(&[
        "break",
        resource,
        "--reason",
        "clearing a stale writer",
        "--freeze",
        "0s",
    ]);
    let out = env.cli(&[
        "config",
        "put",
        name,
        p(&file),
        "--lease",
        &lease,
        "--fence-token",
        &token,
    ]);
    assert_eq!(code(&out), 4, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with(&format!(
            "ERROR: {name}: LEASE BROKEN — lease {lease} token {token} may not write it: "
        )),
        "{line}"
    );
    assert!(line.contains("clearing a stale writer"), "{line}");
    assert!(
        line.contains(&format!("nobody holds {resource} now")),
        "{line}"
    );
    let out = env.cli(&["config", "history", name]);
    assert_eq!(code(&out), 1, "nothing stored: {}", describe(&out));
}
