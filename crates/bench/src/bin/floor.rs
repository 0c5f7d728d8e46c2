//! `floor`: what this machine charges for the pieces every durable lock operation is made of,
//! measured without Locksmith, so that the benchmark numbers can be read against them.
//!
//! - **fdatasync**: a 600-byte `pwrite` then `fdatasync`, appending to a growing file and
//!   overwriting inside a preallocated one (what the embedded store's log segments do), in the
//!   directory given (default: the system temp dir, where `locksmith-bench` puts its store);
//!   and the preallocated case again with the thread asleep for 0.5 ms before each sync, as a
//!   lightly loaded commit thread is (on a VM whose idle vCPUs halt, the completion then has
//!   to wake one).
//! - **direct write**: the same preallocated file opened `O_DIRECT | O_DSYNC`, each append one
//!   4 KiB block write that returns once durable (what the log does where the filesystem
//!   allows it), back to back and after 0.5 ms asleep. Skipped where the filesystem refuses
//!   `O_DIRECT`.
//! - **thread wake-up**: two OS threads passing a token back and forth over blocking channels;
//!   each pass wakes a sleeping thread (the commit thread waking, the reply waking a runtime
//!   worker). Reported per pass, i.e. half a round trip.
//! - **thread → task wake-up**: an OS thread answering a tokio task through a `oneshot`, as the
//!   commit thread answers a request; per pass.
//! - **loopback TCP round trip**: a 64-byte request and answer between two tokio tasks over
//!   127.0.0.1, one in flight (what one client's round trip costs before any work); and the
//!   same with the answering task in another process (this binary again, on its own tokio
//!   runtime, as a server of its own is): the one a client of a separate server pays, where
//!   neither side's thread can run the other's task, so each hop wakes a sleeping thread.
//!
//! It is not a disk benchmark (one block size, one queue depth) and it measures nothing of
//! Locksmith's own code.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

#[derive(Debug, Parser)]
#[command(about = "The machine's floor: fdatasync, thread wake-ups, loopback TCP round trips")]
struct Args {
    /// Directory for the fdatasync files (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Syncs per fdatasync row.
    #[arg(long, default_value_t = 3000)]
    syncs: u64,
    /// Passes per wake-up and round-trip row.
    #[arg(long, default_value_t = 20_000)]
    passes: u64,
    /// Internal: be the other process of the cross-process round trip (echo on a loopback
    /// port, printed on stdout, until stdin closes).
    #[arg(long, hide = true)]
    echo: bool,
}

/// Bytes per synced write: about one small commit frame.
const WRITE: usize = 600;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.echo {
        return echo_process();
    }
    let machine = locksmith_bench::procfs::MachineNote::start();
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("locksmith-floor")
        .tempdir_in(&dir)
        .with_context(|| format!("cannot create a scratch directory in {}", dir.display()))?;
    let mut rows = vec![
        (
            "pwrite 600 B + fdatasync, appending",
            sync_append(&scratch.path().join("append"), args.syncs)?,
        ),
        (
            "pwrite 600 B + fdatasync, preallocated",
            sync_overwrite(&scratch.path().join("prealloc"), args.syncs, None)?,
        ),
        (
            "the same, each after 0.5 ms asleep",
            sync_overwrite(
                &scratch.path().join("prealloc-idle"),
                args.syncs,
                Some(Duration::from_micros(500)),
            )?,
        ),
    ];
    for (what, idle) in [
        ("one 4 KiB O_DIRECT|O_DSYNC write, preallocated", None),
        (
            "the same direct write, each after 0.5 ms asleep",
            Some(Duration::from_micros(500)),
        ),
    ] {
        match direct_writes(&scratch.path().join("direct"), args.syncs, idle)? {
            Some(h) => rows.push((what, h)),
            None => eprintln!(
                "{}: O_DIRECT refused here; no direct-write rows",
                dir.display()
            ),
        }
    }
    rows.push((
        "thread wake-up (blocking channel), per pass",
        thread_pingpong(args.passes)?,
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rows.push((
        "thread → tokio task wake-up (oneshot), per pass",
        rt.block_on(task_pingpong(args.passes))?,
    ));
    rows.push((
        "loopback TCP round trip, 64 B, tokio",
        rt.block_on(tcp_pingpong(args.passes, None))?,
    ));
    let other = EchoProcess::start()?;
    rows.push((
        "the same round trip to another process",
        rt.block_on(tcp_pingpong(args.passes, Some(other.addr)))?,
    ));
    drop(other);

    let mut out = std::io::stdout().lock();
    writeln!(out, "| what | n | mean µs | p50 µs | p99 µs |")?;
    writeln!(out, "|---|---:|---:|---:|---:|")?;
    for (what, h) in rows {
        writeln!(
            out,
            "| {what} | {} | {:.1} | {:.1} | {:.1} |",
            h.len(),
            h.mean() / 1000.0,
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        )?;
    }
    writeln!(out, "\nfdatasync files in {}", dir.display())?;
    writeln!(out, "{}", machine.describe())?;
    Ok(())
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).context("histogram")
}

fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    h.saturating_record(nanos.max(1));
}

fn sync_append(path: &std::path::Path, n: u64) -> anyhow::Result<Histogram<u64>> {
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    time_syncs(&file, n, None)
}

fn sync_overwrite(
    path: &std::path::Path,
    n: u64,
    idle: Option<Duration>,
) -> anyhow::Result<Histogram<u64>> {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    // Written and synced once, so that the timed writes change no file metadata.
    let len = usize::try_from(n)?.saturating_mul(WRITE);
    file.write_all(&vec![0u8; len])?;
    file.sync_all()?;
    time_syncs(&file, n, idle)
}

/// `n` times: write `WRITE` bytes at the next offset and `fdatasync`; each pair timed. With
/// `idle`, the thread sleeps that long before each pair, as a lightly loaded server's commit
/// thread does between requests (on a VM the idle vCPU then has to be woken for the I/O
/// completion, which shows in the sync's latency).
fn time_syncs(
    file: &std::fs::File,
    n: u64,
    idle: Option<Duration>,
) -> anyhow::Result<Histogram<u64>> {
    let buf = [0x5au8; WRITE];
    let mut h = histogram()?;
    for i in 0..n {
        if let Some(idle) = idle {
            std::thread::sleep(idle);
        }
        let started = Instant::now();
        file.write_all_at(&buf, i * WRITE as u64)?;
        file.sync_data()?;
        record(&mut h, started.elapsed());
    }
    Ok(h)
}

/// `n` durable appends as the log makes them where it can: each one 4 KiB `O_DIRECT |
/// O_DSYNC` write (the block holding the append point) into a preallocated file. `None` where
/// the filesystem refuses `O_DIRECT`.
fn direct_writes(
    path: &std::path::Path,
    n: u64,
    idle: Option<Duration>,
) -> anyhow::Result<Option<Histogram<u64>>> {
    use std::os::unix::fs::OpenOptionsExt;
    const BLOCK: usize = 4096;
    let len = usize::try_from(n)?.saturating_mul(WRITE) + BLOCK;
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(&vec![0u8; len])?;
    file.sync_all()?;
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
    else {
        return Ok(None);
    };
    // O_DIRECT wants an aligned buffer: take the aligned block inside a larger one.
    let mut raw = vec![0x5au8; 2 * BLOCK];
    let start = raw.as_ptr().align_offset(BLOCK);
    let block = raw
        .get_mut(start..start + BLOCK)
        .context("cannot align a buffer")?;
    let mut h = histogram()?;
    for i in 0..n {
        if let Some(idle) = idle {
            std::thread::sleep(idle);
        }
        let at = i * WRITE as u64;
        let started = Instant::now();
        if file.write_all_at(block, at - at % BLOCK as u64).is_err() {
            return Ok(None);
        }
        record(&mut h, started.elapsed());
    }
    Ok(Some(h))
}

fn thread_pingpong(n: u64) -> anyhow::Result<Histogram<u64>> {
    let (to_echo, from_main) = mpsc::channel::<Instant>();
    let (to_main, from_echo) = mpsc::channel::<Instant>();
    let echo = std::thread::spawn(move || {
        while let Ok(sent) = from_main.recv() {
            if to_main.send(sent).is_err() {
                break;
            }
        }
    });
    let mut h = histogram()?;
    for _ in 0..n {
        // A pause first, so that the echo thread is asleep when the token arrives.
        std::thread::sleep(Duration::from_micros(50));
        to_echo.send(Instant::now())?;
        let sent = from_echo.recv()?;
        record(&mut h, sent.elapsed() / 2);
    }
    drop(to_echo);
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
    Ok(h)
}

async fn task_pingpong(n: u64) -> anyhow::Result<Histogram<u64>> {
    let (to_thread, from_task) = mpsc::channel::<(Instant, oneshot::Sender<Instant>)>();
    let answerer = std::thread::spawn(move || {
        while let Ok((sent, reply)) = from_task.recv() {
            let _ = reply.send(sent);
        }
    });
    let mut h = histogram()?;
    for _ in 0..n {
        tokio::time::sleep(Duration::from_micros(50)).await;
        let (tx, rx) = oneshot::channel();
        to_thread.send((Instant::now(), tx))?;
        let sent = rx.await?;
        record(&mut h, sent.elapsed() / 2);
    }
    drop(to_thread);
    answerer
        .join()
        .map_err(|_| anyhow::anyhow!("answering thread panicked"))?;
    Ok(h)
}

/// Echoes 64-byte messages on one accepted connection until it closes.
async fn echo(listener: TcpListener) -> anyhow::Result<()> {
    let (mut socket, _) = listener.accept().await?;
    socket.set_nodelay(true)?;
    let mut buf = [0u8; 64];
    loop {
        if socket.read_exact(&mut buf).await.is_err() {
            return Ok(());
        }
        socket.write_all(&buf).await?;
    }
}

/// `--echo`: the other process. Prints its port, echoes one connection, and exits when it
/// closes or when stdin does (the parent is gone).
fn echo_process() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    // The parent gone (stdin closed, or anything written to it): exit at once.
    std::thread::spawn(|| {
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
        std::process::exit(0);
    });
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        writeln!(std::io::stdout(), "{}", listener.local_addr()?.port())?;
        echo(listener).await
    })
}

/// This binary again with `--echo`, killed on drop.
struct EchoProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl EchoProcess {
    fn start() -> anyhow::Result<Self> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe().context("where is this binary")?)
            .arg("--echo")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start the echo process")?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufReader::new(out).read_line(&mut line)?;
        }
        let port: u16 = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("the echo process printed {line:?} instead of its port");
            }
        };
        Ok(Self {
            child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Round trips to an echo task: in this runtime (`to: None`) or at `to`.
async fn tcp_pingpong(n: u64, to: Option<std::net::SocketAddr>) -> anyhow::Result<Histogram<u64>> {
    let (addr, server) = match to {
        Some(addr) => (addr, None),
        None => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            (listener.local_addr()?, Some(tokio::spawn(echo(listener))))
        }
    };
    let mut client = TcpStream::connect(addr).await?;
    client.set_nodelay(true)?;
    let mut buf = [0u8; 64];
    let mut h = histogram()?;
    for _ in 0..n {
        let started = Instant::now();
        client.write_all(&buf).await?;
        client.read_exact(&mut buf).await?;
        record(&mut h, started.elapsed());
    }
    drop(client);
    if let Some(server) = server {
        server.await??;
    }
    Ok(h)
}
