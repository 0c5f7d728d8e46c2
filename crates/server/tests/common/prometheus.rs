//! A real Prometheus (Debian's `prometheus`, installed by `scripts/test`) for the gate tests:
//! started on a free loopback port with a temporary TSDB, scraping the targets a test names
//! every second, killed on drop; and [`Exporter`], a tiny `/metrics` endpoint serving numbers
//! the test sets.
//!
//! Std, serde_json and tempfile only, and synchronous, so any test can use it: include it with
//! `#[path = "…/crates/server/tests/common/prometheus.rs"] mod prometheus;` from another test
//! crate. The waits block the calling thread: an async test whose scrape target is served on its
//! own runtime (an in-process server) runs on a multi-thread runtime.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long Prometheus may take to start, or a scrape to show a value, before the test fails.
pub const LIMIT: Duration = Duration::from_secs(30);

/// A `prometheus` process; killed (SIGKILL) and reaped on drop, its TSDB removed with its
/// temporary directory.
pub struct Prometheus {
    child: Child,
    /// The config file and the TSDB.
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    addr: String,
    /// Its log (stderr), for failure messages.
    log: Arc<Mutex<String>>,
}

/// One sample of an instant vector: the series' labels and its value.
pub type Sample = (BTreeMap<String, String>, f64);

impl Prometheus {
    /// Starts Prometheus scraping each `(job, "127.0.0.1:PORT")` at `/metrics` every second,
    /// and waits until it is ready (not until the targets are scraped: see
    /// [`Prometheus::wait_targets_up`]).
    pub fn start(targets: &[(&str, &str)]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets)).expect("write prometheus.yml");
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            // Port 0: the kernel picks a free port, which Prometheus logs ("Listening on").
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "start `prometheus` (Debian's package: apt-get install prometheus; scripts/test installs it)",
            );
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&log);
        // Drains stderr for the process's whole life (a full pipe would stall its logging).
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("msg=\"Listening on\"")
                    && let Some(addr) = field(&line, "address")
                {
                    let _ = addr_tx.send(addr);
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(LIMIT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "prometheus did not start listening within {LIMIT:?}:\n{}",
                    log.lock().unwrap_or_else(|e| e.into_inner())
                );
            }
        };
        let prom = Prometheus {
            child,
            dir,
            addr,
            log,
        };
        prom.wait_ready();
        prom
    }

    /// `http://127.0.0.1:PORT`: what `--prometheus-url` and the query gate take.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The directory holding its config file and TSDB.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Waits until every one of `n` targets has been scraped successfully (`up == 1`).
    pub fn wait_targets_up(&self, n: usize) {
        self.wait_for("up", &format!("{n} targets up"), |s| {
            s.len() == n && s.iter().all(|(_, v)| *v == 1.0)
        });
    }

    /// Polls the instant query `query` until `ok` holds of its samples (a scrape every second
    /// makes a new value visible within about one): the deterministic wait for a value the
    /// test set to reach Prometheus. Returns those samples.
    pub fn wait_for(&self, query: &str, what: &str, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let samples = self.query(query);
            if let Ok(samples) = &samples
                && ok(samples)
            {
                return samples.clone();
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never showed {what} for {query:?}; last {samples:?}\nlog:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The instant query `query` now, as an instant vector's samples (a scalar as one sample
    /// without labels); `Err` with the body for anything else.
    pub fn query(&self, query: &str) -> Result<Vec<Sample>, String> {
        let body = self.get(&format!("/api/v1/query?query={}", encode(query)))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let data = &v["data"];
        let value = |pair: &Value| -> Option<f64> {
            match pair[1].as_str()? {
                "NaN" => Some(f64::NAN),
                "+Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                s => s.parse().ok(),
            }
        };
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    let labels = serde_json::from_value(s["metric"].clone()).ok()?;
                    Some((labels, value(&s["value"])?))
                })
                .collect()),
            Some("scalar") => Ok(value(&data["result"])
                .map(|v| (BTreeMap::new(), v))
                .into_iter()
                .collect()),
            _ => Err(body),
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + LIMIT;
        while self.get("/-/ready").is_err() {
            assert!(
                Instant::now() < deadline,
                "prometheus at {} was not ready within {LIMIT:?}:\n{}",
                self.addr,
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path`: the body of a 200, else `Err` with the status line or the IO error.
    fn get(&self, path: &str) -> Result<String, String> {
        http_get(&self.addr, path)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scrape config: every target at `/metrics`, every second.
fn scrape_config(targets: &[(&str, &str)]) -> String {
    let mut s = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, target) in targets {
        s.push_str(&format!(
            "  - job_name: '{job}'\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
        ));
    }
    s
}

/// `key=value` (or `key="value"`) in a logfmt line.
fn field(line: &str, key: &str) -> Option<String> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split_whitespace().next()?,
    };
    Some(value.to_owned())
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET on loopback.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(body.to_owned())
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// A `/metrics` endpoint on `127.0.0.1:0` serving the series a test sets (Prometheus' text
/// format, untyped), on a thread of its own; it answers every path the same. Stopped on drop.
pub struct Exporter {
    addr: String,
    series: Arc<Mutex<BTreeMap<String, f64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Exporter {
    /// Starts serving no series.
    pub fn start() -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the exporter");
        let addr = listener.local_addr().expect("addr").to_string();
        let series: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (series, stop) = (Arc::clone(&series), Arc::clone(&stop));
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(conn) = conn {
                        let text = exposition(&series.lock().unwrap_or_else(|e| e.into_inner()));
                        let _ = answer(conn, &text);
                    }
                }
            })
        };
        Exporter {
            addr,
            series,
            stop,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`: a scrape target.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Serves `series` (`name` or `name{label="v",…}`) with `value` from the next scrape on.
    pub fn set(&self, series: &str, value: f64) {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(series.to_owned(), value);
    }

    /// Stops serving `series` (Prometheus marks it stale at the next scrape).
    pub fn remove(&self, series: &str) {
        self.series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(series);
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The text exposition format: `series value` per line.
fn exposition(series: &BTreeMap<String, f64>) -> String {
    series.iter().map(|(s, v)| format!("{s} {v}\n")).collect()
}

/// Reads one request's head and answers `text` (then closes: no keep-alive).
fn answer(mut conn: TcpStream, text: &str) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()
}
