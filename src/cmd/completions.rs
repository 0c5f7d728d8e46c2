//! `locksmith completions SHELL`: print a completion script.

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::exit::Exit;

pub fn completions(args: &CompletionsArgs) -> Exit {
    let mut command = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "locksmith",
        &mut std::io::stdout(),
    );
    Exit::Ok
}
