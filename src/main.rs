//! `locksmith`: the lock server, its command-line client and (later) the endpoint agent, in one
//! binary. This file parses the command line, dispatches, and turns the outcome into one
//! `ERROR:` line and an exit code (see `exit.rs` for the table).

mod cli;
mod cmd;
mod credentials;
mod exit;
mod failure;
mod output;

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command};
use crate::exit::Exit;
use crate::failure::Failure;

/// mimalloc instead of the system allocator: a request allocates and frees dozens of small
/// buffers (headers, JSON), and glibc's malloc/free were ≈ 10 % of the server's CPU under load
/// (`docs/journal/2026-12-03-where-the-time-goes.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // --help and --version are not errors; everything else clap refuses is usage.
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    init_tracing(&cli.command);
    // Before any runtime thread exists: the supervisor blocks signals for its signalfd, and
    // its command's parent-death signal watches the thread that forks it.
    if let Command::RunSupervisor(args) = &cli.command {
        return cmd::run::supervisor::supervise(args.control_fd);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return report(&anyhow::Error::new(e).context("cannot start the async runtime")).into();
        }
    };
    // `token create --node`: the global flag, only as typed (never $LOCKSMITH_NODE).
    let node_typed = node_on_command_line(&matches);
    let exit = match runtime.block_on(dispatch(cli, node_typed)) {
        Ok(exit) => exit,
        Err(e) => report(&e),
    };
    // Every command is done; do not wait for idle connection-pool tasks.
    runtime.shutdown_background();
    exit.into()
}

/// Whether the global `--node` was given on the command line (of any subcommand).
fn node_on_command_line(matches: &clap::ArgMatches) -> bool {
    let mut at = Some(matches);
    while let Some(m) = at {
        if m.value_source("node") == Some(ValueSource::CommandLine) {
            return true;
        }
        at = m.subcommand().map(|(_, sub)| sub);
    }
    false
}

/// Runs one command. A new command is one variant in `cli::Command` and one arm here.
async fn dispatch(cli: Cli, node_typed: bool) -> anyhow::Result<Exit> {
    let Cli { global, command } = cli;
    match command {
        Command::Server(args) => cmd::server::server(&global, *args).await,
        Command::Acquire(args) => cmd::acquire::acquire(&global, args).await,
        Command::Renew(args) => cmd::lease::renew(&global, args).await,
        Command::Release(args) => cmd::lease::release(&global, args).await,
        Command::Locks(args) => cmd::locks::locks(&global, args).await,
        Command::Run(args) => cmd::run::run(&global, args).await,
        Command::Why(args) => cmd::why::why(&global, args).await,
        Command::Status(args) => cmd::status::status(&global, args).await,
        Command::Hold(args) => cmd::holds::hold(&global, args).await,
        Command::Ack(args) => cmd::holds::ack(&global, args).await,
        Command::Unhold(args) => cmd::holds::unhold(&global, args).await,
        Command::Break(args) => cmd::holds::break_lock(&global, args).await,
        Command::Audit(args) => cmd::audit::audit(&global, args).await,
        Command::Watch(args) => cmd::watch::watch(&global, args).await,
        Command::Token(command) => cmd::token::token(&global, command, node_typed).await,
        Command::Config(command) => cmd::config::config(&global, command).await,
        Command::Agent(args) => cmd::agent::agent(&global, *args).await,
        Command::Fleet(command) => cmd::fleet::fleet(&global, command).await,
        Command::Rollout(command) => cmd::rollout::rollout(&global, command).await,
        Command::Demo(args) => cmd::demo::demo(args).await,
        Command::Completions(args) => Ok(cmd::completions::completions(&args)),
        // Dispatched before the runtime starts (see `main`).
        Command::RunSupervisor(_) => Ok(Exit::Usage),
    }
}

/// Logs go to stderr: `info` for the server, only warnings for client commands (whose stdout
/// and stderr are for their answer); `RUST_LOG` overrides either.
fn init_tracing(command: &Command) {
    let default = match command {
        Command::Server(_) | Command::Agent(_) => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
}

/// Prints the one `ERROR:` line for a failed command and picks its exit code.
fn report(e: &anyhow::Error) -> Exit {
    if let Some(failure) = e.downcast_ref::<Failure>() {
        failure.report();
        return failure.exit;
    }
    // A reader that went away (`locksmith locks | head -1`) is not an error.
    let broken_pipe = e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return Exit::Ok;
    }
    Failure::new(
        Exit::Other,
        "locksmith",
        "unexpected failure",
        format!("{e:#}"),
        "retry, and report it if it persists",
    )
    .report();
    Exit::Other
}
