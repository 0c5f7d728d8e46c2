//! The command line, as clap types. Parsing only: what each command does lives in `cmd/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit::EXIT_CODES_HELP;
use crate::output::{Column, parse_column};

/// Ghost-proof locks for fleets: a lock server and its command-line client.
#[derive(Debug, Parser)]
#[command(name = "locksmith", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct Global {
    /// Base URL of the Locksmith server.
    #[arg(
        long,
        global = true,
        env = "LOCKSMITH_SERVER",
        default_value = "http://127.0.0.1:7400",
        value_name = "URL"
    )]
    pub server: String,

    /// Node name recorded as the lock owner's node [default: this host's name].
    #[arg(long, global = true, env = "LOCKSMITH_NODE", value_name = "NAME")]
    pub node: Option<String>,
}

/// One variant per command; each carries its own argument struct so that adding a command
/// (e.g. `bench`) is one variant here and one arm in `main::dispatch`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the lock server (embedded storage; data in --data).
    Server(ServerArgs),
    /// Acquire a lock and print its lease id and fencing token.
    #[command(after_help = with_exit_codes(ACQUIRE_HELP))]
    Acquire(AcquireArgs),
    /// Renew a lease (a heartbeat): its TTL starts again.
    Renew(LeaseArgs),
    /// Release a lease.
    Release(LeaseArgs),
    /// List locks, like lslocks: one row per holder.
    Locks(LocksArgs),
    /// Run a command while holding a lock, like flock(1) or `consul lock`.
    #[command(after_help = with_exit_codes(RUN_HELP))]
    Run(RunArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// A command's own notes, then the exit-code table.
fn with_exit_codes(notes: &str) -> String {
    format!("{notes}\n\n{EXIT_CODES_HELP}")
}

const ACQUIRE_HELP: &str = "\
The lease is owned by the PARENT process of `locksmith acquire` (the shell or script that runs \
it), not by this short-lived command: that process renews and releases the lease later, and \
the server may reclaim the lock early once it is known dead. Use --pid to name another owner.";

const RUN_HELP: &str = "\
The child sees LOCKSMITH_TOKEN, LOCKSMITH_LEASE, LOCKSMITH_RESOURCE and LOCKSMITH_SERVER. \
`run` heartbeats the lease while the child runs; if the lease is lost, it stops the child \
(SIGTERM, then SIGKILL after 10s) and exits 4. Otherwise it releases the lock when the child \
exits and exits with the child's status (128+N if killed by signal N). SIGTERM and SIGINT sent \
to `run` are forwarded to the child.";

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Data directory of the embedded store.
    #[arg(long, default_value = "./locksmith-data", value_name = "DIR")]
    pub data: PathBuf,

    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "ADDR")]
    pub listen: SocketAddr,

    /// How often expired leases are reclaimed.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub gc_interval: Duration,
}

/// Options shared by the commands that acquire a lock.
#[derive(Debug, Args)]
pub struct LockOptions {
    /// Lease TTL: the lock is reclaimed if no heartbeat arrives within it.
    #[arg(long, default_value = "15s", value_parser = parse_duration, value_name = "DURATION")]
    pub ttl: Duration,

    /// Slot count: 1 for an exclusive lock, N for an N-slot semaphore.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub slots: u32,

    /// Why the lock is held [default: the owner's command line].
    #[arg(long, value_name = "TEXT")]
    pub purpose: Option<String>,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// Resource to lock, e.g. configs/aim_lock_config.conf.
    pub resource: String,

    #[command(flatten)]
    pub lock: LockOptions,

    /// How long to wait in the queue while the lock is HOT (0: fail at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION")]
    pub wait: Duration,

    /// Owner process id [default: the parent process, see below].
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Print the lease as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// Lease id, as printed by `acquire`.
    pub lease: u64,

    /// The fencing token: when given, the server also checks it is the lease's.
    #[arg(long, value_name = "T")]
    pub token: Option<u64>,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LocksArgs {
    /// Show only this resource (a FREE resource shows one FREE row).
    pub resource: Option<String>,

    /// Print the server's JSON.
    #[arg(long, conflicts_with = "output")]
    pub json: bool,

    /// Columns to show, comma-separated and case-insensitive, e.g. `-o resource,state,pid`.
    /// Known: RESOURCE, STATE, OWNER, NODE, PID, TOKEN, AGE, TTL-LEFT, LAST-HEARTBEAT, WAITERS,
    /// SLOTS (the default set), LEASE, PURPOSE.
    #[arg(
        long,
        short = 'o',
        value_name = "COLS",
        value_delimiter = ',',
        value_parser = parse_column
    )]
    pub output: Option<Vec<Column>>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Resource to lock.
    pub resource: String,

    /// Fail at once if the lock is HOT (do not wait).
    #[arg(short = 'n', long = "nonblock", conflicts_with = "wait")]
    pub no_wait: bool,

    /// Wait up to SECS for the lock [default: 24h, the server's maximum].
    #[arg(short = 'w', long = "wait", value_parser = parse_duration, value_name = "SECS")]
    pub wait: Option<Duration>,

    #[command(flatten)]
    pub lock: LockOptions,

    /// The command to run and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    pub shell: clap_complete::Shell,
}

/// Parses a duration: `15s`, `90s`, `2m`, `1h 30m`, `500ms`; a plain number means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return s
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .ok_or_else(|| format!("{s:?} is not a number of seconds"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 15s, 90s, 2m or 30"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations_accept_units_and_plain_seconds() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn durations_refuse_garbage() {
        for bad in ["", "abc", "-5", "15x", "1..5", "."] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let cli = Cli::try_parse_from([
            "locksmith",
            "run",
            "res",
            "-w",
            "5",
            "--ttl",
            "2s",
            "--",
            "sh",
            "-c",
            "exit 7",
        ])
        .expect("parses");
        let Command::Run(run) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert_eq!(run.resource, "res");
        assert_eq!(run.wait, Some(Duration::from_secs(5)));
        assert_eq!(run.lock.ttl, Duration::from_secs(2));
        assert_eq!(run.command, ["sh", "-c", "exit 7"]);
    }

    #[test]
    fn run_refuses_both_no_wait_and_wait() {
        let err = Cli::try_parse_from(["locksmith", "run", "r", "-n", "-w", "5", "--", "true"])
            .expect_err("conflict");
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
