//! The demo's stage: a real server process in a temporary directory, the narration, and each
//! step run as the real `locksmith` command with its real output.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// One line of the demo's narration or of a command's output, on stdout (a closed stdout ends
/// nothing: the story goes on).
pub fn show(text: impl AsRef<str>) {
    let _ = crate::output::out(text.as_ref().trim_end_matches('\n'));
}

/// A command's error output, on stderr.
pub fn show_err(text: impl AsRef<str>) {
    let text = text.as_ref();
    if !text.is_empty() {
        let _ = crate::output::note(text.trim_end_matches('\n'));
    }
}

/// A child process, killed and reaped on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server, the binary, the tokens, and how fast to tell it.
pub struct Stage {
    pub bin: PathBuf,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub admin: String,
    pub fast: bool,
    pub _server: Proc,
}

impl Stage {
    /// Starts `locksmith server` on a free loopback port with its data in a new temporary
    /// directory, and reads the admin token it writes.
    pub fn start(fast: bool) -> anyhow::Result<Stage> {
        let bin = std::env::current_exe().context("cannot find the locksmith binary")?;
        let dir = tempfile::Builder::new()
            .prefix("locksmith-demo")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let data = dir.path().join("data");
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let mut child = Command::new(&bin)
            .args(["server", "--listen", "127.0.0.1:0", "--wire-listen", "off"])
            .arg("--data")
            .arg(&data)
            .args(["--max-connections", "20000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start the server")?;
        let stdout = child.stdout.take().context("no server stdout")?;
        let server = Proc(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("locksmith listening on ") else {
            bail!(
                "the server did not start: {}",
                std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
            );
        };
        let admin = std::fs::read_to_string(data.join("admin.token"))
            .context("the server wrote no admin token")?
            .trim()
            .to_owned();
        Ok(Stage {
            bin,
            url: url.to_owned(),
            admin,
            fast,
            _server: server,
            dir,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Narration: a heading and plain words.
    pub fn say(&self, heading: &str, words: &str) {
        show(format!("\n\x1b[1m== {heading}\x1b[0m"));
        for line in textwrap::wrap(words, 96) {
            show(line);
        }
        self.pause(1_200);
    }

    pub fn pause(&self, ms: u64) {
        if !self.fast {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }

    /// `locksmith ARGS` as the holder of `token`, on `node`, for the stage's own bookkeeping:
    /// nothing is shown. Returns (exit code, stdout).
    pub fn quiet(&self, token: &str, node: Option<&str>, args: &[&str]) -> (i32, String) {
        match self.command(token, node, args).output() {
            Ok(out) => (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            ),
            Err(_) => (-1, String::new()),
        }
    }

    fn command(&self, token: &str, node: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--server", &self.url])
            .args(args)
            .env("LOCKSMITH_TOKEN", token)
            .env_remove("LOCKSMITH_TOKEN_FILE")
            .current_dir(self.dir.path());
        if let Some(node) = node {
            cmd.env("LOCKSMITH_NODE", node);
        }
        cmd
    }

    /// `locksmith ARGS` as the holder of `token`, on `node`; prints the command line and its
    /// output as a terminal would show them. Returns (exit code, stdout).
    pub fn run(&self, who: &str, token: &str, node: Option<&str>, args: &[&str]) -> (i32, String) {
        self.run_clipped(who, token, node, args, usize::MAX)
    }

    /// [`Stage::run`], showing at most `max_lines` lines of its output (a fleet-wide listing
    /// of a thousand endpoints says nothing more than its first lines and its count).
    pub fn run_clipped(
        &self,
        who: &str,
        token: &str,
        node: Option<&str>,
        args: &[&str],
        max_lines: usize,
    ) -> (i32, String) {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    (*a).to_owned()
                }
            })
            .collect();
        show(format!(
            "\x1b[2m[{who}]\x1b[0m $ locksmith {}",
            shown.join(" ")
        ));
        let out = match self.command(token, node, args).output() {
            Ok(out) => out,
            Err(e) => {
                show(format!("(could not run it: {e})"));
                return (-1, String::new());
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = stdout.lines().collect();
        for line in lines.iter().take(max_lines) {
            show(line);
        }
        if lines.len() > max_lines {
            show(format!("… ({} more lines)", lines.len() - max_lines));
        }
        show_err(String::from_utf8_lossy(&out.stderr));
        let _ = std::io::stdout().flush();
        self.pause(800);
        (out.status.code().unwrap_or(-1), stdout)
    }

    /// Polls `done` every 100 ms for up to `limit`.
    pub fn wait_until(&self, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
