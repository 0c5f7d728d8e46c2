//! Helpers for tests that run the real `locksmith` binary against a real server process.
//!
//! Every process a test starts is owned by a guard that kills it on drop, so a failing test
//! never leaks a server or a lock holder. Servers listen on 127.0.0.1 only.
#![allow(dead_code)] // each test binary uses its own subset

pub mod fleet;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Longest any single CLI call may take before the test fails (and the process is killed).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_locksmith")
}

/// A `locksmith` command with a clean, fixed environment: no ambient server, node or token, a
/// known user, quiet logs — run in an empty directory, so that no `./locksmith-data/admin.token`
/// of the directory the tests were started from is found.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("LOCKSMITH_SERVER")
        .env_remove("LOCKSMITH_NODE")
        .env_remove("LOCKSMITH_OPERATOR")
        .env_remove("LOCKSMITH_TOKEN")
        .env_remove("LOCKSMITH_TOKEN_FILE")
        .env_remove("LOCKSMITH_CA_FILE")
        .env_remove("LOCKSMITH_CERT")
        .env_remove("LOCKSMITH_KEY")
        .env_remove("RUST_LOG")
        .env("USER", "tester")
        .current_dir(empty_dir())
        .stdin(Stdio::null());
    cmd
}

/// An empty directory for the test process's commands to run in (left behind, empty).
pub fn empty_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("locksmith-cli-cwd")
            .tempdir()
            .expect("tempdir")
            .keep()
    })
}

/// Runs `locksmith ARGS` to completion (bounded by [`CALL_TIMEOUT`]).
pub fn locksmith(args: &[&str]) -> Output {
    output_within(command(args), CALL_TIMEOUT)
}

/// Runs `cmd` to completion, killing it and failing if it takes longer than `limit`.
pub fn output_within(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn locksmith");
    let guard = Killer::new(child.id());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {limit:?}"))
        .expect("wait for locksmith");
    guard.disarm();
    out
}

/// The exit code of a finished command (panics on death by signal).
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {}", describe(out)))
}

/// Stdout and stderr, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts stderr is exactly one `ERROR: ` line and returns it.
pub fn one_error_line(out: &Output) -> String {
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "want one stderr line: {}", describe(out));
    assert!(lines[0].starts_with("ERROR: "), "{}", describe(out));
    lines[0].to_string()
}

/// Sends SIGKILL to a pid when dropped, unless disarmed.
#[derive(Debug)]
pub struct Killer(Option<i32>);

impl Killer {
    pub fn new(pid: u32) -> Self {
        Self(i32::try_from(pid).ok())
    }

    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(i32::try_from(pid).expect("pid")), sig).expect("send signal");
}

/// Whether process `pid` has exited: gone from `/proc`, or a zombie nobody has reaped yet. (A
/// pid reused since reads as alive: callers check pids they saw a moment ago.)
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// Waits until `pid` has [`exited`], failing after `limit`.
pub fn wait_exited(pid: u32, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !exited(pid) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} still running after {limit:?}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads the first line of the child's stdout (bounded by [`CALL_TIMEOUT`]); only once.
    pub fn read_line(&mut self) -> String {
        let stdout = self
            .child
            .stdout
            .take()
            .expect("stdout piped, and read only once");
        read_first_line(stdout, CALL_TIMEOUT)
            .unwrap_or_else(|| panic!("no line on stdout of pid {}", self.pid()))
    }

    /// Reads the first line of the child's stderr (bounded by [`CALL_TIMEOUT`]); only once, and
    /// [`Proc::stderr`] returns nothing afterwards.
    pub fn read_stderr_line(&mut self) -> String {
        let stderr = self
            .child
            .stderr
            .take()
            .expect("stderr piped, and read only once");
        read_first_line(stderr, CALL_TIMEOUT)
            .unwrap_or_else(|| panic!("no line on stderr of pid {}", self.pid()))
    }

    /// Waits for the child to exit, failing after `limit`.
    pub fn wait_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pid {} still running after {limit:?}",
                self.pid()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The rest of stderr (call after exit).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the first line of `stdout` on a helper thread, so a silent child cannot hang the test.
/// The thread keeps the pipe and drains it.
fn read_first_line(stdout: impl Read + Send + 'static, limit: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let got = reader.read_line(&mut line).ok().filter(|n| *n > 0);
        let _ = tx.send(got.map(|_| line.trim_end().to_string()));
        // Keep draining so the child never blocks on (or dies of) a closed stdout.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    rx.recv_timeout(limit).ok().flatten()
}

/// `unshare --pid --fork --mount-proc`: runs a command as pid 1 of a new PID namespace with its
/// own `/proc`, on the same host name, boot id and network — a container sharing the host's
/// network and UTS namespaces (a Kubernetes `hostNetwork` pod). `--kill-child`: the command
/// dies with `unshare`, so the harness's kill on drop reaches it.
pub const IN_NEW_PID_NAMESPACE: [&str; 5] =
    ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

/// Whether [`IN_NEW_PID_NAMESPACE`] works here (it needs CAP_SYS_ADMIN); tests that need it say
/// so and return early where it does not.
pub fn pid_namespaces_available() -> bool {
    let works = Command::new(IN_NEW_PID_NAMESPACE[0])
        .args(&IN_NEW_PID_NAMESPACE[1..])
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        eprintln!("SKIPPED: `unshare --pid --fork --mount-proc` is not permitted here");
    }
    works
}

/// A raw HTTP client that sends `Authorization: Bearer TOKEN` with every request (nothing
/// without a token).
pub fn http_as(token: Option<&str>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("header value");
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("http client")
}

/// A `locksmith server` process on 127.0.0.1, on a free port, killed on drop.
///
/// Authentication is on, as it is by default: the server's first start writes its admin token
/// to `DATA/admin.token`, and every command made by [`ServerProc::command`] finds it there
/// through `$LOCKSMITH_TOKEN_FILE` (its [`ServerProc::client`] sends it too). A test passes
/// `--auth off` itself only when it is about something authentication would only add noise to.
#[derive(Debug)]
pub struct ServerProc {
    proc: Proc,
    url: String,
    log: PathBuf,
    /// `DATA/admin.token`, with authentication on.
    admin_token: Option<PathBuf>,
}

impl ServerProc {
    /// Starts a server keeping its data in `data_dir` (its log goes to `data_dir` + `.log`),
    /// and waits for its `locksmith listening on URL` line.
    pub fn start(data_dir: &Path) -> ServerProc {
        Self::start_with(data_dir, &[])
    }

    /// Like [`ServerProc::start`], with extra `locksmith server` options (e.g.
    /// `--probe-interval 0`, so that only the CLI's own liveness reports reclaim dead holders).
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> ServerProc {
        Self::spawn_server(&[], data_dir, extra, &data_dir.with_extension("log"))
    }

    /// Like [`ServerProc::start_with`], run by `wrapper` (e.g. `unshare --pid --fork
    /// --mount-proc --kill-child`, whose child dies with it), which execs its arguments.
    pub fn start_under(wrapper: &[&str], data_dir: &Path, extra: &[&str]) -> ServerProc {
        Self::spawn_server(wrapper, data_dir, extra, &data_dir.with_extension("log"))
    }

    /// Like [`ServerProc::start_with`], logging to `log`, and — with `shell` — started by
    /// `sh -c "SHELL && exec locksmith server …"`, e.g. `ulimit -n 256` to run it under a
    /// descriptor limit (the server keeps `sh`'s pid).
    pub fn launch(data_dir: &Path, extra: &[&str], log: &Path, shell: Option<&str>) -> ServerProc {
        match shell {
            Some(shell) => {
                let script = format!("{shell} && exec \"$0\" \"$@\"");
                Self::spawn_server(&["sh", "-c", &script], data_dir, extra, log)
            }
            None => Self::spawn_server(&[], data_dir, extra, log),
        }
    }

    /// Starts `locksmith server` — run by `wrapper`'s program and arguments, which exec it,
    /// when there is one — logging to `log`.
    fn spawn_server(wrapper: &[&str], data_dir: &Path, extra: &[&str], log: &Path) -> ServerProc {
        let log = log.to_path_buf();
        let log_file = File::create(&log).expect("create server log");
        let data = data_dir.to_str().expect("utf-8 data dir");
        // A `--listen` of the caller's (a fixed port, to restart on it) replaces the default.
        let mut args = vec!["server", "--data", data];
        if !extra.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend_from_slice(extra);
        let auth_off = extra.windows(2).any(|w| w == ["--auth", "off"]);
        let admin_token = (!auth_off).then(|| data_dir.join("admin.token"));
        let mut cmd = command(&args);
        if let Some((program, before)) = wrapper.split_first() {
            let mut wrapped = Command::new(program);
            wrapped.args(before).arg(bin()).args(&args);
            for (key, value) in cmd.get_envs() {
                match value {
                    Some(v) => wrapped.env(key, v),
                    None => wrapped.env_remove(key),
                };
            }
            cmd = wrapped;
            cmd.stdin(Stdio::null());
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("spawn locksmith server");
        let mut proc = Proc { child };
        let stdout = proc.child.stdout.take().expect("stdout piped");
        let line = read_first_line(stdout, CALL_TIMEOUT);
        let Some(url) = line
            .as_deref()
            .and_then(|l| l.strip_prefix("locksmith listening on "))
            .map(str::to_string)
        else {
            panic!(
                "server did not announce its address (got {line:?}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        };
        assert!(
            url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
            "{url}"
        );
        ServerProc {
            proc,
            url,
            log,
            admin_token,
        }
    }

    /// The admin token's secret (`DATA/admin.token`); `None` with `--auth off`, or in cluster
    /// mode on a server that did not write it.
    pub fn admin_token(&self) -> Option<String> {
        let path = self.admin_token.as_ref()?;
        std::fs::read_to_string(path)
            .ok()
            .map(|t| t.trim().to_string())
    }

    /// A Rust client of the server, sending the admin token (if any).
    pub fn client(&self) -> locksmith_client::Client {
        let client = locksmith_client::Client::new(self.url()).expect("client");
        match self.admin_token() {
            Some(token) => client.with_token(&token).expect("token"),
            None => client,
        }
    }

    /// A wire-protocol client of the server's wire port `addr`, sending the admin token (if
    /// any).
    pub fn wire_client(&self, addr: &str) -> locksmith_client::WireClient {
        let client = locksmith_client::WireClient::new(addr);
        match self.admin_token() {
            Some(token) => client.with_token(&token),
            None => client,
        }
    }

    /// A raw HTTP client that sends `Authorization: Bearer <admin token>` with every request
    /// (nothing with `--auth off`). The token stays the same across restarts on the same data.
    pub fn http(&self) -> reqwest::Client {
        http_as(self.admin_token().as_deref())
    }

    /// The server's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Stops the server with SIGTERM (a graceful shutdown) and returns how it exited.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        signal(self.pid(), Signal::SIGTERM);
        self.proc.wait_within(limit)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A `locksmith --server URL ARGS` command, finding the admin token through
    /// `$LOCKSMITH_TOKEN_FILE` (with authentication on).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = command(&["--server", &self.url]);
        cmd.args(args);
        if let Some(token) = &self.admin_token {
            cmd.env("LOCKSMITH_TOKEN_FILE", token);
        }
        cmd
    }

    /// Runs `locksmith --server URL ARGS` to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        output_within(self.command(args), CALL_TIMEOUT)
    }

    /// Runs `locksmith --server URL ARGS` with `token` in `$LOCKSMITH_TOKEN` (which comes
    /// before the admin token's `$LOCKSMITH_TOKEN_FILE`).
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(args);
        cmd.env("LOCKSMITH_TOKEN", token);
        output_within(cmd, CALL_TIMEOUT)
    }

    /// `config put NAME FILE --json` as the admin, with `content` written to `file` first
    /// and `extra` flags (`--draft`, `-m …`); the new revision's number. Fails the test if
    /// the put is refused.
    pub fn put_config(&self, name: &str, file: &Path, content: &str, extra: &[&str]) -> u64 {
        std::fs::write(file, content).expect("write the config file");
        let mut args = vec![
            "config",
            "put",
            name,
            file.to_str().expect("utf-8"),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert_eq!(code(&out), 0, "{}", describe(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        v["rev"].as_u64().expect("rev")
    }

    /// Makes a token (`token create --name NAME --role ROLE EXTRA… --json`, as the admin) and
    /// returns its secret.
    pub fn make_token(&self, name: &str, role: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--name", name, "--role", role, "--json"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert_eq!(code(&out), 0, "{}", describe(&out));
        let made: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token JSON");
        made["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret in {made}"))
            .to_string()
    }

    /// Starts `locksmith --server URL ARGS` in the background, stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn locksmith");
        Proc { child }
    }

    /// The STATE column of `locksmith locks RESOURCE`.
    pub fn state(&self, resource: &str) -> String {
        self.state_of(resource, &[])
    }

    /// The STATE column of `locksmith locks RESOURCE --no-check`: as the server sees it, without
    /// this node's liveness checks reclaiming anything first.
    pub fn state_unchecked(&self, resource: &str) -> String {
        self.state_of(resource, &["--no-check"])
    }

    fn state_of(&self, resource: &str, extra: &[&str]) -> String {
        let mut args = vec!["locks", resource, "-o", "state"];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert_eq!(code(&out), 0, "{}", describe(&out));
        stdout(&out)
            .lines()
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Polls `locks RESOURCE` until its state is `want`, for at most `limit`; true if it was.
    pub fn wait_for_state(&self, resource: &str, want: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.state(resource) == want {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // Proc's own drop kills and reaps it.
        if std::thread::panicking() {
            eprintln!("--- server log ({})\n{}", self.log.display(), self.log());
        }
    }
}
