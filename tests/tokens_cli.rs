//! Identity and access from the command line: the real `locksmith` binary against a real
//! `locksmith server` with authentication on (its default) — token commands, where the CLI
//! finds its token, what it says when the server refuses one, and the quick start that needs
//! no flag at all.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{
    CALL_TIMEOUT, Proc, ServerProc, code, describe, one_error_line, output_within, stderr, stdout,
};

fn server() -> (tempfile::TempDir, ServerProc) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServerProc::start(&dir.path().join("data"));
    (dir, server)
}

/// `locksmith --server URL ARGS` with no token anywhere (an empty directory, no variables):
/// what the test adds to it is all there is.
fn bare(server: &ServerProc, args: &[&str]) -> Command {
    let mut cmd = common::command(&["--server", server.url()]);
    cmd.args(args);
    cmd
}

fn run(cmd: Command) -> Output {
    output_within(cmd, CALL_TIMEOUT)
}

fn ok(out: &Output) -> String {
    assert_eq!(code(out), 0, "{}", describe(out));
    stdout(out)
}

/// A secret's form: `lsm_` and 43 base64url characters.
fn is_secret(s: &str) -> bool {
    s.strip_prefix("lsm_").is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[test]
fn token_create_ls_revoke_round_trip_shows_the_secret_once_and_never_again() {
    let (_dir, server) = server();
    let out = server.cli(&[
        "token", "create", "--name", "ci", "--role", "client", "--prefix", "deploy/", "--ttl",
        "30d",
    ]);
    let text = ok(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("made token tok-2 \"ci\" (role client, prefixes deploy/, expires "),
        "{text}"
    );
    let secret = lines[1].to_string();
    assert!(is_secret(&secret), "{text}");
    assert!(
        lines[2].starts_with("store this secret now: it is shown only this once"),
        "{text}"
    );

    let out = server.cli(&[
        "token", "create", "--name", "agent-7", "--role", "node", "--node", "node-7", "--json",
    ]);
    let made: serde_json::Value = serde_json::from_str(&ok(&out)).expect("JSON");
    assert_eq!(made["id"], "tok-3", "{made}");
    assert_eq!(made["name"], "agent-7", "{made}");
    assert_eq!(made["role"], "node", "{made}");
    assert_eq!(made["node"], "node-7", "{made}");
    let node_secret = made["token"].as_str().expect("token").to_string();
    assert!(is_secret(&node_secret), "{made}");

    // The new token works, within its prefixes.
    ok(&server.cli_as(&secret, &["acquire", "deploy/web", "--ttl", "60s"]));
    let out = server.cli_as(&secret, &["acquire", "other/web"]);
    assert_eq!(code(&out), 7, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.starts_with("ERROR: other/web: FORBIDDEN — "), "{line}");
    assert!(line.contains("$LOCKSMITH_TOKEN"), "{line}");
    // It is no admin.
    let out = server.cli_as(&secret, &["token", "ls"]);
    assert_eq!(code(&out), 7, "{}", describe(&out));
    assert!(one_error_line(&out).starts_with("ERROR: tokens: FORBIDDEN — "));

    // Listings never show a secret.
    for args in [&["token", "ls"][..], &["token", "ls", "--json"][..]] {
        let out = server.cli(args);
        let text = ok(&out);
        assert!(!text.contains("lsm_"), "{args:?}: {text}");
        assert!(
            !text.contains(&secret[4..]) && !text.contains(&node_secret[4..]),
            "{text}"
        );
    }
    let out = server.cli(&["token", "ls"]);
    let text = ok(&out);
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "ID", "NAME", "ROLE", "NODE", "PREFIXES", "CREATED", "EXPIRES", "STATE"
        ]
    );
    let row = |id: &str| -> Vec<String> {
        let out = server.cli(&["token", "ls"]);
        ok(&out)
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no {id} in the listing"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let ci = row("tok-2");
    assert_eq!(ci[..5], ["tok-2", "ci", "client", "-", "deploy/"]);
    assert_eq!(ci.last().map(String::as_str), Some("live"));
    assert_eq!(row("tok-3")[3], "node-7");

    // Revoked: it stops working at once.
    let out = server.cli(&["token", "revoke", "tok-2"]);
    assert!(
        ok(&out).starts_with("token tok-2 \"ci\" (role client) revoked: it stops working now"),
        "{}",
        describe(&out)
    );
    assert_eq!(row("tok-2").last().map(String::as_str), Some("revoked"));
    let out = server.cli_as(&secret, &["locks"]);
    assert_eq!(code(&out), 7, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with("ERROR: locks: NOT AUTHENTICATED — token tok-2 (ci) was revoked"),
        "{line}"
    );
    assert!(
        line.contains("the token came from $LOCKSMITH_TOKEN"),
        "{line}"
    );
    assert!(line.contains("locksmith token create"), "{line}");

    // Errors name the token and the next step, exit 1.
    let out = server.cli(&["token", "revoke", "tok-2"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(one_error_line(&out).starts_with("ERROR: tok-2: ALREADY REVOKED — "));
    let out = server.cli(&["token", "revoke", "tok-99"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with("ERROR: tok-99: NO SUCH TOKEN — "),
        "{line}"
    );
    assert!(line.contains("locksmith token ls"), "{line}");
    let out = server.cli(&["token", "create", "--name", "n", "--role", "node"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.starts_with("ERROR: token n: invalid node — "),
        "{line}"
    );
    assert!(line.ends_with("fix --node and retry"), "{line}");
    let out = server.cli(&["token", "create", "--name", "n", "--role", "root"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));

    // Neither the server's log nor the audit trail ever shows a secret.
    let log = server.log();
    for s in [&secret, &node_secret] {
        assert!(!log.contains(&s[4..]), "a secret in the server log");
    }
    let audit = ok(&server.cli(&["audit", "--json"]));
    assert!(!audit.contains("lsm_"), "{audit}");
    assert!(
        audit.contains("token_created") && audit.contains("token_revoked"),
        "{audit}"
    );
}

/// `$LOCKSMITH_NODE` is the lock owner's node; it must not bind a token made in the same
/// shell (it would make every `--role client` token a refused request).
#[test]
fn token_create_takes_the_node_only_from_the_command_line() {
    let (_dir, server) = server();
    let mut cmd = server.command(&[
        "token", "create", "--name", "svc", "--role", "client", "--json",
    ]);
    cmd.env("LOCKSMITH_NODE", "node-9");
    let made: serde_json::Value = serde_json::from_str(&ok(&run(cmd))).expect("JSON");
    assert_eq!(made["node"], serde_json::Value::Null, "{made}");
    let out = server.cli(&[
        "--node", "node-9", "token", "create", "--name", "a", "--role", "node",
    ]);
    assert!(
        ok(&out).starts_with("made token tok-3 \"a\" (role node, node node-9"),
        "{}",
        describe(&out)
    );
}

/// Each source of the token, in order: `--token` or `--token-file` (exclusive), then
/// `$LOCKSMITH_TOKEN`, then `$LOCKSMITH_TOKEN_FILE`, then `./locksmith-data/admin.token`. Who
/// acted is read back from the hold each places (a hold is placed by the token's name).
#[test]
fn the_cli_finds_its_token_flags_first_then_the_environment_then_the_quick_start_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The server's data directory is `./locksmith-data` of the directory the CLI runs in.
    let server = ServerProc::start(&dir.path().join("locksmith-data"));
    let files = tempfile::tempdir().expect("token files");
    let mut secrets = Vec::new();
    for name in ["flag", "flag-file", "env", "env-file"] {
        secrets.push(server.make_token(name, "operator", &[]));
    }
    let file = |i: usize| {
        let path = files.path().join(format!("t{i}"));
        std::fs::write(&path, format!("{}\n", secrets[i])).expect("token file");
        path.to_str().expect("utf-8").to_string()
    };
    let (flag_file, env_file) = (file(1), file(3));

    // Who places a hold on `res` with these extra arguments and variables, from `cwd`.
    let mut n = 0;
    let mut placed_by = |args: &[&str], vars: &[(&str, &str)], cwd: &Path| -> Output {
        n += 1;
        let res = format!("precedence/{n}");
        let mut cmd = bare(&server, args);
        cmd.args(["hold", &res, "--for", "1s", "--reason", "who", "--json"]);
        cmd.current_dir(cwd);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        run(cmd)
    };
    let by = |out: &Output| -> String {
        let hold: serde_json::Value = serde_json::from_str(&ok(out)).expect("hold JSON");
        hold["by"].as_str().unwrap_or_default().to_string()
    };
    let all_vars = [
        ("LOCKSMITH_TOKEN", secrets[2].as_str()),
        ("LOCKSMITH_TOKEN_FILE", env_file.as_str()),
    ];
    let here = dir.path();
    let out = placed_by(&["--token", &secrets[0]], &all_vars, here);
    assert_eq!(by(&out), "flag");
    let out = placed_by(&["--token-file", &flag_file], &all_vars, here);
    assert_eq!(by(&out), "flag-file");
    let out = placed_by(&[], &all_vars, here);
    assert_eq!(by(&out), "env");
    let out = placed_by(&[], &all_vars[1..], here);
    assert_eq!(by(&out), "env-file");
    // Nothing given: the quick start's admin token, found from the directory the server runs in.
    let out = placed_by(&[], &[], here);
    assert_eq!(by(&out), "admin");
    // An empty variable is unset.
    let out = placed_by(&[], &[("LOCKSMITH_TOKEN", "")], here);
    assert_eq!(by(&out), "admin");

    // Nothing anywhere: the server's 401, and where the CLI looked.
    let out = placed_by(&[], &[], common::empty_dir());
    assert_eq!(code(&out), 7, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(
        line.contains(
            ": NOT AUTHENTICATED — the server requires a token, and none was found \
             (--token, --token-file, $LOCKSMITH_TOKEN, $LOCKSMITH_TOKEN_FILE, \
             ./locksmith-data/admin.token)"
        ),
        "{line}"
    );
    // Both flags: a usage error.
    let out = placed_by(
        &["--token", &secrets[0], "--token-file", &flag_file],
        &[],
        here,
    );
    assert_eq!(code(&out), 2, "{}", describe(&out));
    // An explicit file that is not there is an error naming it, not a fall-through to the
    // next source.
    let missing = files.path().join("missing");
    let missing = missing.to_str().expect("utf-8");
    for (args, vars, source) in [
        (
            vec!["--token-file", missing],
            vec![],
            format!("--token-file {missing}"),
        ),
        (
            vec![],
            vec![("LOCKSMITH_TOKEN_FILE", missing)],
            format!("$LOCKSMITH_TOKEN_FILE ({missing})"),
        ),
    ] {
        let out = placed_by(&args, &vars, here);
        assert_eq!(code(&out), 7, "{}", describe(&out));
        let line = one_error_line(&out);
        assert!(
            line.starts_with(&format!(
                "ERROR: locksmith: cannot use the token from {source} — cannot read it: "
            )),
            "{line}"
        );
    }
}

/// Empty, truncated, with another prefix, 10 KB long: the server answers 401 to each, the CLI
/// says so in one line naming where the token came from (never the token), exits 7, and
/// nothing changes. Raw HTTP gets the 401 with its challenge.
#[test]
fn bad_tokens_get_401_name_their_source_and_change_nothing() {
    let (_dir, server) = server();
    let good = server.make_token("ci", "client", &[]);
    let long = format!("lsm_{}", "A".repeat(10 * 1024));
    let truncated = good[..good.len() - 1].to_string();
    let other_prefix = good.replacen("lsm_", "ghp_", 1);
    let bad: [(&str, &str); 4] = [
        ("empty", ""),
        ("truncated", &truncated),
        ("another prefix", &other_prefix),
        ("10 KB", &long),
    ];
    let tokens_before = ok(&server.cli(&["token", "ls", "--json"]));
    for (what, token) in bad {
        // On the command line, and in the environment.
        let mut flag = bare(&server, &["--token", token, "acquire", "res"]);
        flag.env("RUST_LOG", "trace");
        let mut env = bare(&server, &["acquire", "res"]);
        env.env("LOCKSMITH_TOKEN", token).env("RUST_LOG", "trace");
        for (source, cmd) in [("--token", flag), ("$LOCKSMITH_TOKEN", env)] {
            let out = run(cmd);
            assert_eq!(code(&out), 7, "{what} in {source}: {}", describe(&out));
            let err = stderr(&out);
            let line = err
                .lines()
                .find(|l| l.starts_with("ERROR: "))
                .unwrap_or_else(|| panic!("{what}: no ERROR line: {err}"));
            if token.is_empty() && source == "$LOCKSMITH_TOKEN" {
                // An empty variable is unset: no token at all.
                assert!(line.contains("none was found"), "{what}: {line}");
            } else {
                assert!(
                    line.starts_with("ERROR: res: NOT AUTHENTICATED — "),
                    "{what}: {line}"
                );
                assert!(
                    line.contains(&format!("the token came from {source}")),
                    "{what}: {line}"
                );
            }
            // Not in the line, nor in any trace of the HTTP client.
            if !token.is_empty() {
                assert!(
                    !err.contains(&token[4..token.len().min(40)]),
                    "{what} shown: {err}"
                );
            }
        }
    }
    // Raw HTTP: 401 with the bearer challenge.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for (what, token) in bad {
            let answer = common::http_as(Some(token))
                .post(format!("{}/v1/acquire", server.url()))
                .json(&serde_json::json!({
                    "resource": "res",
                    "owner": {"node": "n", "pid": 1, "start_time": 1, "boot_id": "b",
                              "user": "u", "purpose": "p"},
                }))
                .send()
                .await
                .expect("POST");
            assert_eq!(answer.status().as_u16(), 401, "{what}");
            assert!(
                answer
                    .headers()
                    .get("www-authenticate")
                    .is_some_and(|v| v.to_str().unwrap_or_default().starts_with("Bearer")),
                "{what}"
            );
            let body: serde_json::Value = answer.json().await.expect("JSON");
            assert_eq!(body["error"], "unauthenticated", "{what}: {body}");
        }
    });
    // Nothing changed: the lock was never taken, no token came or went, no grant was audited.
    let out = server.cli(&["locks", "res", "-o", "state", "--no-check"]);
    assert_eq!(ok(&out).lines().nth(1).map(str::trim), Some("FREE"));
    assert_eq!(ok(&server.cli(&["token", "ls", "--json"])), tokens_before);
    let audit = ok(&server.cli(&["audit", "--resource", "res", "--json"]));
    assert!(!audit.contains("granted"), "{audit}");
}

#[test]
fn a_node_token_cannot_acquire_as_another_node_from_the_cli() {
    let (_dir, server) = server();
    let agent = server.make_token("agent-7", "node", &["--node", "node-7"]);
    let out = server.cli_as(&agent, &["--node", "node-8", "acquire", "fleet/cfg"]);
    assert_eq!(code(&out), 7, "{}", describe(&out));
    let line = one_error_line(&out);
    assert!(line.starts_with("ERROR: fleet/cfg: FORBIDDEN — "), "{line}");
    assert!(line.contains("node-7") && line.contains("node-8"), "{line}");
    let out = server.cli(&["locks", "fleet/cfg", "-o", "state", "--no-check"]);
    assert_eq!(ok(&out).lines().nth(1).map(str::trim), Some("FREE"));
    // As its own node, it may.
    let out = server.cli_as(&agent, &["--node", "node-7", "acquire", "fleet/cfg"]);
    assert!(ok(&out).starts_with("lease "), "{}", describe(&out));
}

/// A revoked token's `watch` (an event stream) ends within a second, exit 7 saying why, and
/// its next command is refused.
#[test]
fn a_revoked_tokens_watch_ends_saying_why_and_its_next_command_is_refused() {
    let (_dir, server) = server();
    let reader = server.make_token("dashboard", "reader", &[]);
    let mut watch: Proc = {
        let child = server
            .command(&["watch"])
            .env("LOCKSMITH_TOKEN", &reader)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn watch");
        Proc { child }
    };
    let note = watch.read_stderr_line();
    assert!(note.starts_with("watching events"), "{note}");
    ok(&server.cli(&["token", "revoke", "tok-2"]));
    // 7: the stream ended because its token stopped working (a shutdown's end is 0).
    let status = watch.wait_within(Duration::from_secs(5));
    assert_eq!(status.code(), Some(7));
    let out = server.cli_as(&reader, &["status"]);
    assert_eq!(code(&out), 7, "{}", describe(&out));
    assert!(one_error_line(&out).contains("was revoked"));
}

#[test]
fn an_auth_off_server_needs_no_token_and_status_lists_it_as_a_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = ServerProc::start_with(&data, &["--auth", "off"]);
    assert!(
        !data.join("admin.token").exists(),
        "--auth off made a token"
    );
    assert!(
        server.log().contains("authentication is OFF"),
        "{}",
        server.log()
    );
    let out = run(bare(&server, &["acquire", "lab/x"]));
    assert!(ok(&out).starts_with("lease "), "{}", describe(&out));
    let out = run(bare(&server, &["status"]));
    assert_eq!(code(&out), 6, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("[auth_off] authentication is off")),
        "{text}"
    );
}

/// The quick start, on a fresh machine: `locksmith server` in a directory (default data
/// directory), then `locksmith acquire R` from the same directory with no token flag or
/// variable — the admin token the first start wrote is found. (`--listen 127.0.0.1:0` and
/// `$LOCKSMITH_SERVER` only because tests must not take the default port.)
#[test]
fn the_quick_start_works_with_no_token_flag_from_the_servers_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = common::command(&["server", "--listen", "127.0.0.1:0"]);
    cmd.current_dir(dir.path());
    let mut server = Proc {
        child: cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn server"),
    };
    let line = server.read_line();
    let url = line
        .strip_prefix("locksmith listening on ")
        .unwrap_or_else(|| panic!("announce line: {line}"))
        .to_string();
    let token = dir.path().join("locksmith-data").join("admin.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token)
            .expect("admin.token")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "admin.token is readable by others");

    let mut acquire = common::command(&["acquire", "configs/aim_lock_config.conf"]);
    acquire
        .current_dir(dir.path())
        .env("LOCKSMITH_SERVER", &url);
    let out = run(acquire);
    assert!(
        ok(&out).starts_with("lease 1 token 1 on configs/aim_lock_config.conf"),
        "{}",
        describe(&out)
    );
    // From anywhere else, the same command says what is missing.
    let mut elsewhere = common::command(&["acquire", "configs/other.conf"]);
    elsewhere.env("LOCKSMITH_SERVER", &url);
    let out = run(elsewhere);
    assert_eq!(code(&out), 7, "{}", describe(&out));
    assert!(one_error_line(&out).contains("none was found"));
    drop(server.child.kill());
}
