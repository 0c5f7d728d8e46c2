//! `locksmith config …`: the config store from the command line. Shared here: reading a file,
//! choosing its format, and how a refused call about a config reads.
//!
//! - `write`: the fenced changes (put, rollback, promote) and the lease they are made under;
//! - `read`: get, history, diff, ls;
//! - `check`: schema set/get and validate, and how an invalid file's problems read.

mod check;
mod read;
mod write;

use std::io::Read;
use std::path::Path;

use locksmith_api::ErrorCode;
use locksmith_client::{Client, ClientError};
use locksmith_config::Format;

use crate::cli::{ConfigCommand, ConfigSchemaCommand, Global};
use crate::exit::Exit;
use crate::failure::{Context, Failure};

pub async fn config(global: &Global, command: ConfigCommand) -> anyhow::Result<Exit> {
    match command {
        ConfigCommand::Put(args) => write::put(global, args).await,
        ConfigCommand::Rollback(args) => write::rollback(global, args).await,
        ConfigCommand::Promote(args) => write::promote(global, args).await,
        ConfigCommand::Get(args) => read::get(global, args).await,
        ConfigCommand::History(args) => read::history(global, args).await,
        ConfigCommand::Diff(args) => read::diff(global, args).await,
        ConfigCommand::Ls(args) => read::ls(global, args).await,
        ConfigCommand::Schema(ConfigSchemaCommand::Set(args)) => {
            check::schema_set(global, args).await
        }
        ConfigCommand::Schema(ConfigSchemaCommand::Get(args)) => {
            check::schema_get(global, args).await
        }
        ConfigCommand::Validate(args) => check::validate(global, args).await,
        ConfigCommand::Shadow(args) => super::fleet::shadow(global, args).await,
    }
}

/// The failure context of a call about config `name`.
fn ctx(name: &str) -> Context<'_> {
    Context {
        subject: name,
        wait_flag: "--wait",
    }
}

/// Refuses a name the server would refuse, before any round trip.
fn check_name(name: &str) -> Result<(), Failure> {
    locksmith_config::validate_name(name).map_err(|e| {
        Failure::invalid(
            name,
            "config name",
            e,
            "name it like a relative path, e.g. fleet/aim_lock_config.conf",
        )
    })
}

/// A client for `--server`, after checking the config's name.
fn client_for(global: &Global, name: &str) -> Result<Client, Failure> {
    check_name(name)?;
    super::client(global, ctx(name))
}

/// The bytes of `file` (`-`: stdin), exactly.
fn read_file(name: &str, file: &Path) -> Result<Vec<u8>, Failure> {
    let read = if file == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
    } else {
        std::fs::read(file)
    };
    read.map_err(|e| {
        Failure::new(
            Exit::Other,
            name,
            &format!("cannot read {}", file.display()),
            e,
            "check the path and its permissions",
        )
    })
}

/// The format of `file` by its extension: `.conf`, `.toml`, `.json`; `None` for any other.
fn format_of_extension(file: &Path) -> Option<Format> {
    match file.extension()?.to_str()? {
        "conf" => Some(Format::Conf),
        "toml" => Some(Format::Toml),
        "json" => Some(Format::Json),
        _ => None,
    }
}

/// The format to send `file` as: `--format`, else the config's own (fixed by its first
/// revision, so any other would be refused), else the file's extension, else raw.
async fn choose_format(
    client: &Client,
    name: &str,
    file: &Path,
    given: Option<Format>,
) -> Result<Format, Failure> {
    if let Some(format) = given {
        return Ok(format);
    }
    let own = match client.config_history(name).await {
        Ok(history) => history.head.format,
        Err(e) if e.code() == Some(ErrorCode::ConfigNotFound) => None,
        Err(e) => return Err(Failure::from_client(&e, ctx(name))),
    };
    Ok(own
        .or_else(|| format_of_extension(file))
        .unwrap_or(Format::Raw))
}

/// The line for a refused call about config `name`: the common phrasing, except that an
/// invalid file's problems are listed with where they are (`file` when the content came from
/// one).
fn failure(e: &ClientError, name: &str, file: Option<&Path>) -> Failure {
    match e {
        ClientError::Api { body, .. } if body.error == ErrorCode::InvalidConfig => {
            check::invalid_failure(name, file, body)
        }
        _ => Failure::from_client(e, ctx(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extension_names_the_format_and_anything_else_is_none() {
        for (file, want) in [
            ("aim_lock_config.conf", Some(Format::Conf)),
            ("fleet/limits.toml", Some(Format::Toml)),
            ("a.json", Some(Format::Json)),
            ("firmware.bin", None),
            ("README", None),
            ("a.CONF", None),
        ] {
            assert_eq!(format_of_extension(Path::new(file)), want, "{file}");
        }
    }

    #[test]
    fn a_bad_name_is_refused_before_any_call() {
        let f = check_name("../etc/passwd").expect_err("refused");
        assert_eq!(f.exit, Exit::Other);
        assert!(
            f.line.starts_with("../etc/passwd: invalid config name — "),
            "{}",
            f.line
        );
    }
}
