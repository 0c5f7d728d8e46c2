//! The first admin token: what keeps the quick start two commands with authentication on.
//!
//! A server with authentication on that finds no token at all in its store — a first start —
//! makes one, named `admin` with role admin, and writes its secret to `DATA/admin.token`
//! (mode 0600, in the `--data` directory; the CLI reads `./locksmith-data/admin.token` by
//! default). The log names the file, never the secret. The file is written before the token is
//! committed, so a token whose secret nobody has is never made; a start that fails between the
//! two leaves a file that authenticates nobody, replaced at the next start.
//!
//! In cluster mode the tokens are records in etcd, shared by every server: the first leader to
//! find none makes the admin token and writes the file in *its* `--data` directory (created if
//! missing); later leaders find the token and make none. Which server did it is in its log and
//! in the audit trail (`token_created`, by `server`).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use locksmith_auth::{CreateToken, Role, Secret};

use crate::engine::{Engine, EngineError};
use crate::{AuthMode, ServerError};

/// The file the first admin token's secret is written to, in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Makes the first admin token if authentication is on and the store has no token; returns
/// where its secret was written.
pub async fn admin_token(
    engine: &Engine,
    auth: AuthMode,
    data_dir: &Path,
) -> Result<Option<PathBuf>, ServerError> {
    if auth == AuthMode::Off || !engine.tokens().is_empty() {
        return Ok(None);
    }
    let fail = |why: String| ServerError::Bootstrap(why);
    let random = super::ops::random_secret().map_err(|e| fail(e.0.message))?;
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let secret = Secret::from_random(random);
    let dir = data_dir.to_path_buf();
    let file = path.clone();
    tokio::task::spawn_blocking(move || write_secret(&dir, &file, &secret))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
    let made = engine
        .create_token(
            CreateToken {
                name: "admin".to_owned(),
                role: Role::Admin,
                node: None,
                prefixes: Vec::new(),
                ttl_ms: None,
                created_by: "server".to_owned(),
            },
            random,
        )
        .await;
    match made {
        Ok((record, _)) => {
            tracing::info!(id = %record.id, path = %path.display(),
                "first start with authentication on: made the admin token; its secret is in \
                 this file (mode 0600) — the CLI reads ./locksmith-data/admin.token, or pass \
                 --token-file");
            Ok(Some(path))
        }
        Err(EngineError::Refused(e)) => Err(fail(e.to_string())),
        Err(EngineError::Storage(e)) => Err(ServerError::Store(e)),
        Err(EngineError::ShuttingDown) => Err(fail("the server is shutting down".to_owned())),
    }
}

/// Writes `secret` and a newline to `path`, readable by this user only: a new file made with
/// mode 0600 beside it, then renamed over it, so the secret is never readable by others, not
/// even for a moment, and a reader never sees half of it.
fn write_secret(dir: &Path, path: &Path, secret: &Secret) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let partial = dir.join(format!("{ADMIN_TOKEN_FILE}.partial"));
    let _ = std::fs::remove_file(&partial);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)?;
    file.write_all(secret.expose().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
