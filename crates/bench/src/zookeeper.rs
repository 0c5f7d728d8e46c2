//! A standalone ZooKeeper server (Debian's `zookeeper` package) on a free loopback port with its
//! own temporary data directory, for the `fanout` benchmark. Killed on drop; it also runs under
//! a `sh` wrapper that kills it when this process's pipe to the wrapper closes, so even a
//! `kill -9` of the benchmark leaves no server behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The jar Debian's package installs; its manifest's `Class-Path` names every dependency.
pub const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
const JAVA: &str = "/usr/bin/java";
/// What Debian's `zkServer.sh` runs (`ZOOMAIN` in `/usr/share/zookeeper/bin/zkEnv.sh`); with a
/// config that names no peers it runs a standalone server.
const MAIN_CLASS: &str = "org.apache.zookeeper.server.quorum.QuorumPeerMain";

/// Starts the server in the background, prints its pid, and waits for a line (or EOF: this
/// process is gone, however it ended) on stdin; then kills it and removes its directory.
const WRAPPER: &str = r#"
"$@" </dev/null >>"$LOCKSMITH_ZK_DIR/zookeeper.log" 2>&1 &
pid=$!
echo "$pid"
read -r _ || true
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
[ -n "$LOCKSMITH_ZK_DIR" ] && rm -rf "$LOCKSMITH_ZK_DIR"
exit 0
"#;

/// A running ZooKeeper server.
#[derive(Debug)]
pub struct ZooKeeperServer {
    wrapper: Child,
    stdin: Option<ChildStdin>,
    pid: i32,
    port: u16,
    // Last: removed after the server has stopped (see `Drop`).
    dir: tempfile::TempDir,
}

impl ZooKeeperServer {
    /// Starts a standalone server and waits until it answers `ruok` (at most 30 s).
    ///
    /// The config is the package's example with what a benchmark of many clients from one
    /// address needs: no per-address connection cap (`maxClientCnxns=0`; the default of 60
    /// would refuse a fleet on loopback), no AdminServer (it would take port 8080), and the
    /// four-letter words `ruok` (readiness) and `wchs` (watch count) allowed. Transaction-log
    /// fsync stays on (the default), as etcd's does.
    pub fn start() -> anyhow::Result<Self> {
        for path in [JAVA, ZOOKEEPER_JAR] {
            if !Path::new(path).exists() {
                bail!("{path} is missing: apt-get install zookeeper (scripts/test does)");
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("locksmith-fanout-zk")
            .tempdir()?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let data = dir.path().join("data");
        std::fs::create_dir(&data)?;
        let cfg = dir.path().join("zoo.cfg");
        std::fs::write(
            &cfg,
            format!(
                "tickTime=2000\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=ruok,wchs\n",
                data.display()
            ),
        )?;
        let mut wrapper = Command::new("/bin/sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("locksmith-zk-wrapper")
            .arg(JAVA)
            .arg("-cp")
            .arg(ZOOKEEPER_JAR)
            .arg(MAIN_CLASS)
            .arg(&cfg)
            .env("LOCKSMITH_ZK_DIR", dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("run /bin/sh to start zookeeper")?;
        let stdin = wrapper.stdin.take();
        let mut line = String::new();
        if let Some(stdout) = wrapper.stdout.take() {
            BufReader::new(stdout).read_line(&mut line)?;
        }
        let pid = line
            .trim()
            .parse()
            .with_context(|| format!("the zookeeper wrapper printed {line:?} instead of a pid"))?;
        let server = Self {
            wrapper,
            stdin,
            pid,
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.four_letter("ruok").ok().as_deref() != Some("imok") {
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(server.dir.path().join("zookeeper.log"))
                    .unwrap_or_default();
                bail!("zookeeper on port {port} did not answer ruok within 30 s; its log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(server)
    }

    /// `127.0.0.1:PORT`, the connect string for a client.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Java process's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The server's answer to a four-letter word (`ruok`, `wchs`), trimmed.
    pub fn four_letter(&self, word: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(word.as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.trim().to_owned())
    }

    /// How many watches the server holds (`Total watches:` of `wchs`): one per (session, path),
    /// however many watchers a client library keeps for it.
    pub fn total_watches(&self) -> anyhow::Result<u64> {
        let answer = self.four_letter("wchs")?;
        answer
            .lines()
            .find_map(|l| l.strip_prefix("Total watches:"))
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("zookeeper's wchs answer has no watch count: {answer:?}"))
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        // The wrapper kills the server and removes the directory on EOF.
        drop(self.stdin.take());
        let _ = self.wrapper.wait();
    }
}
