//! Which API token the CLI sends, and where it found it.
//!
//! In order, the first that gives one: `--token SECRET`, `--token-file FILE` (the two are
//! exclusive), `$LOCKSMITH_TOKEN`, `$LOCKSMITH_TOKEN_FILE`, then `./locksmith-data/admin.token`
//! when it is there and readable — the file a first `locksmith server` (auth on, default data
//! directory) writes, so the quick start needs no flag. Command-line flags come before the
//! environment, as everywhere else in the CLI (a `--token-file` given for one command is not
//! overridden by a `LOCKSMITH_TOKEN` exported long ago). An empty variable counts as unset.
//!
//! The secret is never printed or logged: [`Secret`]'s `Debug` hides it, messages name only
//! where it came from ([`Source`]), and the client marks its header sensitive. A file is read
//! whole and trimmed (a trailing newline is not part of the secret); an explicit file that
//! cannot be read, or is empty, is an error naming it — never a silent fall-through to the
//! next source.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::exit::Exit;
use crate::failure::Failure;

/// The quick start's admin token, relative to the working directory: the server's default
/// `--data` is `./locksmith-data`, and its first start writes `admin.token` there.
pub const QUICK_START_TOKEN: &str = "./locksmith-data/admin.token";

/// The variable holding a token's secret.
pub const TOKEN_VAR: &str = "LOCKSMITH_TOKEN";
/// The variable naming a file that holds a token's secret.
pub const TOKEN_FILE_VAR: &str = "LOCKSMITH_TOKEN_FILE";

/// A token's secret as given to the CLI. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl Secret {
    /// The secret, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `--token`'s parser: the value, hidden from `Debug`.
pub fn parse_secret(raw: &str) -> Result<Secret, String> {
    Ok(Secret(raw.trim().to_string()))
}

/// Where the token came from: what messages say instead of the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--token`.
    Flag,
    /// `--token-file FILE`.
    FlagFile(PathBuf),
    /// `$LOCKSMITH_TOKEN`.
    Env,
    /// `$LOCKSMITH_TOKEN_FILE`, naming this file.
    EnvFile(PathBuf),
    /// [`QUICK_START_TOKEN`].
    QuickStart,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("--token"),
            Source::FlagFile(path) => write!(f, "--token-file {}", path.display()),
            Source::Env => write!(f, "${TOKEN_VAR}"),
            Source::EnvFile(path) => write!(f, "${TOKEN_FILE_VAR} ({})", path.display()),
            Source::QuickStart => write!(f, "{QUICK_START_TOKEN} (the quick start's admin token)"),
        }
    }
}

/// What discovery found: the token and where it came from, or none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    /// The token, if any source gave one.
    pub token: Option<(Secret, Source)>,
    /// [`QUICK_START_TOKEN`] is there but this user may not read it (another user's server):
    /// worth saying when the server then wants a token.
    pub quick_start_unreadable: bool,
}

impl Found {
    /// Where the token came from, if there is one.
    pub fn source(&self) -> Option<&Source> {
        self.token.as_ref().map(|(_, source)| source)
    }

    /// A `--token` that is a number: the fencing token `renew` and `release` took as
    /// `--token` before API tokens existed (now `--fence-token`).
    pub fn looks_like_a_fencing_token(&self) -> bool {
        matches!(&self.token, Some((secret, Source::Flag))
            if !secret.0.is_empty() && secret.0.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// What the process found, once it looked: failure lines name its source.
static FOUND: OnceLock<Found> = OnceLock::new();

/// What discovery found in this process, if it ran.
pub fn found() -> Option<&'static Found> {
    FOUND.get()
}

/// Finds the token for this process (see the module docs), and remembers where it came from
/// for failure lines. An explicit file that cannot be read, or holds nothing, is an error
/// (exit 7) naming it.
pub fn discover(flag: Option<&Secret>, flag_file: Option<&Path>) -> Result<Found, Failure> {
    let found = discover_in(
        flag,
        flag_file,
        |name| std::env::var_os(name),
        Path::new(QUICK_START_TOKEN),
    )?;
    Ok(FOUND.get_or_init(|| found).clone())
}

/// [`discover`], with the environment read through `var` and the quick start's file at
/// `quick_start`.
pub fn discover_in(
    flag: Option<&Secret>,
    flag_file: Option<&Path>,
    var: impl Fn(&str) -> Option<OsString>,
    quick_start: &Path,
) -> Result<Found, Failure> {
    let found = |secret: Secret, source: Source| Found {
        token: Some((secret, source)),
        quick_start_unreadable: false,
    };
    if let Some(secret) = flag {
        return Ok(found(secret.clone(), Source::Flag));
    }
    if let Some(path) = flag_file {
        let source = Source::FlagFile(path.to_path_buf());
        return Ok(found(read_token(path, &source)?, source));
    }
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(value) = set(TOKEN_VAR) {
        let secret = value.into_string().map_err(|_| {
            denied(
                &Source::Env,
                "it is not UTF-8, so it is no token",
                &format!("set ${TOKEN_VAR} to the secret 'locksmith token create' printed"),
            )
        })?;
        return Ok(found(Secret(secret.trim().to_string()), Source::Env));
    }
    if let Some(path) = set(TOKEN_FILE_VAR) {
        let path = PathBuf::from(path);
        let source = Source::EnvFile(path.clone());
        return Ok(found(read_token(&path, &source)?, source));
    }
    match std::fs::read_to_string(quick_start) {
        Ok(text) if !text.trim().is_empty() => {
            Ok(found(Secret(text.trim().to_string()), Source::QuickStart))
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(Found {
            token: None,
            quick_start_unreadable: true,
        }),
        // Not there (not the server's directory), or empty: no token from it.
        _ => Ok(Found::default()),
    }
}

/// The secret in the file at `path` (named by `source`).
fn read_token(path: &Path, source: &Source) -> Result<Secret, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        denied(
            source,
            &format!("cannot read it: {e}"),
            "check the path (the file holds the secret 'locksmith token create' printed; the \
             quick start's is DATA/admin.token on the server's machine)",
        )
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(denied(
            source,
            "the file is empty",
            "put the secret 'locksmith token create' printed in it",
        ));
    }
    Ok(Secret(secret.to_string()))
}

/// A token source that cannot be used (exit 7): `locksmith: cannot use SOURCE — why; next`.
fn denied(source: &Source, why: &str, next: &str) -> Failure {
    Failure::new(
        Exit::Denied,
        "locksmith",
        &format!("cannot use the token from {source}"),
        why,
        next,
    )
}

/// The details and next step of a 401 (`msg`: the server's message), given what was found.
pub fn unauthenticated(msg: &str, found: Option<&Found>) -> String {
    const MAKE: &str = "an admin makes one with 'locksmith token create --name NAME --role ROLE'";
    match found.and_then(|f| f.token.as_ref()) {
        Some((_, source)) if found.is_some_and(Found::looks_like_a_fencing_token) => format!(
            "{msg}; the token from {source} is a number: renew and release take the fencing \
             token as --fence-token now, and --token is the API token ({MAKE})"
        ),
        Some((_, source)) => {
            format!("{msg}; the token came from {source}: check it, or use another ({MAKE})")
        }
        None if found.is_some_and(|f| f.quick_start_unreadable) => format!(
            "the server requires a token, and {QUICK_START_TOKEN} is there but not readable by \
             you; pass --token-file FILE or set ${TOKEN_VAR} ({MAKE})"
        ),
        None => format!(
            "the server requires a token, and none was found (--token, --token-file, \
             ${TOKEN_VAR}, ${TOKEN_FILE_VAR}, {QUICK_START_TOKEN}); pass --token-file FILE — on \
             the server's machine its first start wrote DATA/admin.token — or set ${TOKEN_VAR} \
             ({MAKE})"
        ),
    }
}

/// The next step of a 403: a token that may, naming the one used.
pub fn forbidden_next(found: Option<&Found>) -> String {
    let used = match found.and_then(Found::source) {
        Some(source) => format!("the token from {source} may not do this"),
        None => "this token may not do this".to_string(),
    };
    format!(
        "{used}: use one whose role, prefixes and node allow it, or ask an admin for one \
         ('locksmith token create --name NAME --role ROLE [--prefix P] [--node NODE]')"
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn secret(s: &str) -> Secret {
        Secret(s.to_string())
    }

    /// Discovery with these variables set and a quick-start file holding `quick`.
    fn discover_with(
        flag: Option<&str>,
        flag_file: Option<&Path>,
        vars: &[(&str, &str)],
        quick: Option<&str>,
    ) -> Result<Found, Failure> {
        let dir = tempfile::tempdir().expect("tempdir");
        let quick_start = dir.path().join("admin.token");
        if let Some(text) = quick {
            std::fs::write(&quick_start, text).expect("write");
        }
        let vars: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_string(), OsString::from(v)))
            .collect();
        discover_in(
            flag.map(secret).as_ref(),
            flag_file,
            |name| vars.get(name).cloned(),
            &quick_start,
        )
    }

    fn source(found: &Found) -> Option<Source> {
        found.source().cloned()
    }

    #[test]
    fn flags_come_first_then_the_environment_then_the_quick_start_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("t");
        std::fs::write(&file, "lsm_file\n").expect("write");
        let env_file = dir.path().join("e");
        std::fs::write(&env_file, "lsm_envfile").expect("write");
        let env_file = env_file.to_str().expect("utf-8");
        let all = [(TOKEN_VAR, "lsm_env"), (TOKEN_FILE_VAR, env_file)];

        let got = discover_with(Some("lsm_flag"), None, &all, Some("lsm_quick")).expect("found");
        assert_eq!(source(&got), Some(Source::Flag));
        let got = discover_with(None, Some(&file), &all, Some("lsm_quick")).expect("found");
        assert_eq!(source(&got), Some(Source::FlagFile(file.clone())));
        assert_eq!(got.token.expect("token").0.expose(), "lsm_file");
        let got = discover_with(None, None, &all, Some("lsm_quick")).expect("found");
        assert_eq!(source(&got), Some(Source::Env));
        let got = discover_with(None, None, &all[1..], Some("lsm_quick")).expect("found");
        assert_eq!(source(&got), Some(Source::EnvFile(env_file.into())));
        assert_eq!(got.token.expect("token").0.expose(), "lsm_envfile");
        let got = discover_with(None, None, &[], Some("lsm_quick\n")).expect("found");
        assert_eq!(source(&got), Some(Source::QuickStart));
        assert_eq!(got.token.expect("token").0.expose(), "lsm_quick");
        let got = discover_with(None, None, &[], None).expect("nothing");
        assert_eq!(got, Found::default());
        // An empty variable is unset.
        let got = discover_with(None, None, &[(TOKEN_VAR, "")], Some("lsm_quick")).expect("ok");
        assert_eq!(source(&got), Some(Source::QuickStart));
    }

    #[test]
    fn an_explicit_file_that_cannot_be_used_is_an_error_naming_it_never_a_fall_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let err = discover_with(None, Some(&missing), &[(TOKEN_VAR, "lsm_env")], None)
            .expect_err("missing file");
        assert_eq!(err.exit, Exit::Denied);
        assert!(
            err.line.starts_with(&format!(
                "locksmith: cannot use the token from --token-file {} — cannot read it: ",
                missing.display()
            )),
            "{}",
            err.line
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let err = discover_with(
            None,
            None,
            &[(TOKEN_FILE_VAR, empty.to_str().expect("utf-8"))],
            None,
        )
        .expect_err("empty file");
        assert!(err.line.contains("— the file is empty; "), "{}", err.line);
    }

    #[test]
    fn no_message_or_debug_shows_the_secret() {
        let got = discover_with(Some("lsm_topsecret"), None, &[], None).expect("found");
        assert!(!format!("{got:?}").contains("topsecret"));
        assert!(!unauthenticated("unknown token", Some(&got)).contains("topsecret"));
        assert!(!forbidden_next(Some(&got)).contains("topsecret"));
    }

    #[test]
    fn a_numeric_token_flag_is_taken_for_the_old_fencing_flag_in_the_hint() {
        let got = discover_with(Some("17"), None, &[], None).expect("found");
        assert!(got.looks_like_a_fencing_token());
        assert!(unauthenticated("malformed", Some(&got)).contains("--fence-token"));
    }
}
