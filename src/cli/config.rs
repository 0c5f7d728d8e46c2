//! `locksmith config …`: the config store's commands, as clap types.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use locksmith_config::Format;

use super::parse_duration;

/// `locksmith config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a new revision of a config from a file (fenced by the lock configs/NAME).
    #[command(after_help = PUT_HELP)]
    Put(ConfigPutArgs),
    /// Print a config's current revision (or --rev N) exactly as stored.
    Get(ConfigGetArgs),
    /// List a config's revisions: who wrote each, when, under which fencing token, and why.
    History(ConfigNameArgs),
    /// A unified diff between two revisions.
    Diff(ConfigDiffArgs),
    /// Make an older revision's content current again (a new revision, fenced).
    Rollback(ConfigRollbackArgs),
    /// Make a draft current (a new revision, fenced).
    Promote(ConfigPromoteArgs),
    /// List every config.
    #[command(visible_alias = "list")]
    Ls(ConfigLsArgs),
    /// Set or show a config's JSON Schema.
    #[command(subcommand)]
    Schema(ConfigSchemaCommand),
    /// Check a file as a write would (format, schema), without writing.
    Validate(ConfigValidateArgs),
    /// Send a revision (usually a draft) to endpoints as a shadow: each agent validates it and
    /// reports the diff it would make; nothing is activated (see `locksmith fleet show`).
    Shadow(super::ConfigShadowArgs),
}

const PUT_HELP: &str = "\
Without --lease, `put` takes the lock configs/NAME itself (owned by this command's process; \
--wait says how long to queue for it), writes, and releases it — also when the write is \
refused. With --lease and --fence-token (as `locksmith acquire configs/NAME --json` printed \
them), the write lands only if that token is still the current holder's of configs/NAME; \
otherwise it is refused (exit 4) and nothing is stored. The format is --format, else the \
config's own (a config keeps its first revision's), else the file's extension (.conf, .toml, \
.json), else raw.";

/// `--lease ID --fence-token T`: write under a lease the caller holds already.
#[derive(Debug, Args)]
pub struct FenceArgs {
    /// A lease on configs/NAME the caller holds (`locksmith acquire configs/NAME`) [default:
    /// take the lock for this change and release it after].
    #[arg(long, value_name = "ID", requires = "fence_token")]
    pub lease: Option<u64>,

    /// The lease's fencing token. (Not --token: that is the API token.)
    #[arg(long = "fence-token", value_name = "T", requires = "lease")]
    pub fence_token: Option<u64>,

    /// Without --lease: how long to wait for the lock configs/NAME while someone else holds it.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION",
          conflicts_with = "lease")]
    pub wait: Duration,
}

#[derive(Debug, Args)]
pub struct ConfigPutArgs {
    /// The config, e.g. aim_lock_config.conf or fleet/limits.toml.
    pub name: String,

    /// The file to write (`-` for stdin).
    pub file: PathBuf,

    /// Why: shown in history and audit.
    #[arg(short = 'm', long, default_value = "", value_name = "MSG")]
    pub message: String,

    /// Store it as a draft: readable and diffable, current only once promoted.
    #[arg(long)]
    pub draft: bool,

    /// The content's format [default: see below].
    #[arg(long, value_parser = parse_format, value_name = "conf|toml|json|raw")]
    pub format: Option<Format>,

    #[command(flatten)]
    pub fence: FenceArgs,

    /// Print the new revision as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigGetArgs {
    /// The config.
    pub name: String,

    /// This revision (a draft too) [default: the current one].
    #[arg(long, value_name = "N")]
    pub rev: Option<u64>,

    /// Put the provenance line first (`# locksmith: NAME rev N by …`; conf and TOML only).
    #[arg(long)]
    pub stamp: bool,

    /// Print the revision (metadata and content) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigNameArgs {
    /// The config.
    pub name: String,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigDiffArgs {
    /// The config.
    pub name: String,

    /// The older revision.
    pub from: u64,

    /// The newer revision.
    pub to: u64,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigRollbackArgs {
    /// The config.
    pub name: String,

    /// The revision whose content becomes current again.
    #[arg(long, value_name = "N")]
    pub to: u64,

    /// Why: shown in history and audit.
    #[arg(short = 'm', long, default_value = "", value_name = "MSG")]
    pub message: String,

    #[command(flatten)]
    pub fence: FenceArgs,

    /// Print the new revision as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigPromoteArgs {
    /// The config.
    pub name: String,

    /// The draft to make current.
    #[arg(long, value_name = "N")]
    pub rev: u64,

    /// Why: shown in history and audit.
    #[arg(short = 'm', long, default_value = "", value_name = "MSG")]
    pub message: String,

    #[command(flatten)]
    pub fence: FenceArgs,

    /// Print the new revision as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigLsArgs {
    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `locksmith config schema …`.
#[derive(Debug, Subcommand)]
pub enum ConfigSchemaCommand {
    /// Set the JSON Schema every later revision must pass (refused if the current one fails).
    Set(ConfigSchemaSetArgs),
    /// Print the JSON Schema in force.
    Get(ConfigNameArgs),
}

#[derive(Debug, Args)]
pub struct ConfigSchemaSetArgs {
    /// The config.
    pub name: String,

    /// The JSON Schema document.
    pub schema: PathBuf,

    /// Print the server's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ConfigValidateArgs {
    /// The config whose format and schema to check against.
    pub name: String,

    /// The file to check (`-` for stdin).
    pub file: PathBuf,

    /// The content's format [default: the config's, else the file's extension, else raw].
    #[arg(long, value_parser = parse_format, value_name = "conf|toml|json|raw")]
    pub format: Option<Format>,

    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--format`.
fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s.trim()).map_err(|e| e.to_string())
}
