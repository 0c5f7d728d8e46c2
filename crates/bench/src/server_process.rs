//! The real `locksmith server` binary as a child process, for measurements an in-process server
//! cannot give: its own RSS and CPU time, and its restart time from `exec` to serving.
//!
//! The server runs under a small `sh` wrapper that holds a pipe from this process (as
//! `compare`'s Redis does): [`ServerProcess::stop`] asks for SIGTERM and waits for the exit
//! status, [`ServerProcess::kill`] (and `Drop`) for SIGKILL — and when this process goes away by
//! any means, even `kill -9`, the pipe closes and the wrapper kills the server. So no server is
//! ever left behind.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Starts the server in the background with its stdout and stderr in files, prints its pid,
/// then waits for a line on stdin: `term` sends SIGTERM, anything else (or EOF: this process
/// is gone) SIGKILL. Then it waits for the server and prints its exit status.
const WRAPPER: &str = r#"
"$@" >"$LOCKSMITH_SCALE_LOG.out" 2>>"$LOCKSMITH_SCALE_LOG.err" </dev/null &
pid=$!
echo "$pid"
read -r command || command=""
if [ "$command" = term ]; then kill -TERM "$pid" 2>/dev/null; else kill -9 "$pid" 2>/dev/null; fi
wait "$pid"
echo "$?"
exit 0
"#;

/// What the announce line starts with (`locksmith server` prints it once it serves), then
/// `http://` or `https://` and the address.
const ANNOUNCE: &str = "locksmith listening on ";
/// What the wire protocol's announce line starts with (printed right after [`ANNOUNCE`]'s).
const WIRE_ANNOUNCE: &str = "locksmith wire protocol on ";

/// The `locksmith` binary to run: `given`, else the one next to this process's binary (where
/// `cargo build` puts both).
pub fn locksmith_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => Ok(std::env::current_exe()
            .context("where is this binary?")?
            .with_file_name("locksmith")),
    }
}

/// A fleet bench's server: `bin server` on a fresh data directory in a temporary directory
/// (prefixed `prefix`), without the wire listener, and a client of it. The directory goes when
/// the returned one is dropped, after the server.
pub async fn fleet_server(
    bin: &Path,
    prefix: &str,
) -> anyhow::Result<(ServerProcess, locksmith_client::Client, tempfile::TempDir)> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    let (server, _) = ServerProcess::start(
        bin,
        &dir.path().join("data"),
        &dir.path().join("server"),
        &["--wire-listen", "off"],
        Duration::from_secs(60),
    )
    .await?;
    let client = locksmith_client::Client::new(server.url())?;
    Ok((server, client, dir))
}

/// A running `locksmith server`, killed (SIGKILL) on drop.
#[derive(Debug)]
pub struct ServerProcess {
    wrapper: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

/// How long a start took, from spawning the process.
#[derive(Debug, Clone, Copy)]
pub struct Startup {
    /// Until the announce line was on its stdout (store opened and loaded, table recovered,
    /// listener bound).
    pub announced: Duration,
    /// Until `GET /healthz` first answered 200: restart-to-serving.
    pub serving: Duration,
}

impl ServerProcess {
    /// Runs `bin server --data DIR --listen 127.0.0.1:0 EXTRA…`, with its output in
    /// `LOG.out`/`LOG.err`, and waits (up to `within`) until `/healthz` answers 200.
    pub async fn start(
        bin: &Path,
        data: &Path,
        log: &Path,
        extra: &[&str],
        within: Duration,
    ) -> anyhow::Result<(Self, Startup)> {
        if !bin.exists() {
            bail!(
                "{} is missing: build the server first (cargo build --release)",
                bin.display()
            );
        }
        let out = with_suffix(log, "out");
        // Measured from here: the `sh` in front costs about a millisecond.
        let spawned = Instant::now();
        let mut wrapper = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("locksmith-scale-wrapper")
            .arg(bin)
            .arg("server")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            // The scale runs measure the lock table, not authentication.
            .args(["--auth", "off"])
            .args(extra)
            .env("LOCKSMITH_SCALE_LOG", log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("run /bin/sh to start the server")?;
        let stdin = wrapper.stdin.take();
        let mut stdout = wrapper.stdout.take().map(BufReader::new);
        let mut line = String::new();
        if let Some(s) = stdout.as_mut() {
            s.read_line(&mut line).context("read the server's pid")?;
        }
        let pid = line
            .trim()
            .parse::<u32>()
            .with_context(|| format!("the wrapper printed {line:?} instead of a pid"))?;
        let mut server = Self {
            wrapper,
            stdin,
            stdout,
            pid,
            // Replaced as soon as the announce line is read.
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: log.to_path_buf(),
        };
        let deadline = spawned + within;
        // The announce line carries the port (it listens on port 0).
        let announced = loop {
            if let Some(addr) = announced(&out, ANNOUNCE) {
                server.addr = addr;
                break spawned.elapsed();
            }
            server.check_alive(deadline, "announce its address")?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        loop {
            if healthz_ok(server.addr).await {
                let serving = spawned.elapsed();
                return Ok((server, Startup { announced, serving }));
            }
            server.check_alive(deadline, "answer /healthz")?;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The wire protocol's address, from the server's announce lines (none with
    /// `--wire-listen off`).
    pub fn wire_addr(&self) -> Option<SocketAddr> {
        announced(&with_suffix(&self.log, "out"), WIRE_ANNOUNCE)
    }

    /// The last lines of its stderr (the log), for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(with_suffix(&self.log, "err")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Stops it with SIGTERM (graceful shutdown) and waits; returns its exit status and how
    /// long it took to exit.
    pub fn stop(mut self) -> anyhow::Result<(i32, Duration)> {
        let started = Instant::now();
        let status = self.signal(b"term\n")?;
        Ok((status, started.elapsed()))
    }

    /// Kills it with SIGKILL (`kill -9`: no shutdown, the store is left as a crash leaves it).
    pub fn kill(mut self) -> anyhow::Result<()> {
        self.signal(b"kill\n").map(|_| ())
    }

    /// Sends the wrapper its command and waits for the exit status it prints.
    fn signal(&mut self, command: &[u8]) -> anyhow::Result<i32> {
        let mut stdin = self.stdin.take().context("already stopped")?;
        stdin
            .write_all(command)
            .context("tell the wrapper to stop the server")?;
        drop(stdin);
        let mut line = String::new();
        if let Some(s) = self.stdout.as_mut() {
            s.read_line(&mut line)
                .context("read the server's exit status")?;
        }
        let _ = self.wrapper.wait();
        line.trim()
            .parse()
            .with_context(|| format!("the wrapper printed {line:?} instead of an exit status"))
    }

    fn check_alive(&mut self, deadline: Instant, what: &str) -> anyhow::Result<()> {
        let exited = !Path::new(&format!("/proc/{}", self.pid)).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            });
        if exited {
            bail!(
                "the server exited before it could {what}; its log ends:\n{}",
                self.log_tail()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "the server did not {what} in time; its log ends:\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Closing the pipe makes the wrapper kill the server (SIGKILL) and wait for it.
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
    }
}

fn with_suffix(log: &Path, suffix: &str) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// The address in the server's stdout line that starts with `prefix` ([`ANNOUNCE`] or
/// [`WIRE_ANNOUNCE`]), once it has printed it.
fn announced(out: &Path, prefix: &str) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(out).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|a| {
            let a = a.trim();
            a.strip_prefix("http://")
                .or_else(|| a.strip_prefix("https://"))
                .unwrap_or(a)
        })
        .and_then(|a| a.parse().ok())
}

/// One `GET /healthz` on a fresh connection: true when it answers 200.
pub async fn healthz_ok(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
