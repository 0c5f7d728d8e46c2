//! This node's name and boot id: what every process on the machine shares.

use std::fs;
use std::path::PathBuf;

use crate::IdentityError;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// This host's name.
pub fn hostname() -> Result<String, IdentityError> {
    let name = nix::unistd::gethostname()
        .map_err(|e| IdentityError::Hostname(e.desc().to_string()))?
        .into_string()
        .map_err(|raw| IdentityError::Hostname(format!("{raw:?} is not UTF-8")))?;
    if name.trim().is_empty() {
        return Err(IdentityError::Hostname("it is empty".into()));
    }
    Ok(name)
}

/// This node's boot id: it changes on every reboot.
pub fn boot_id() -> Result<String, IdentityError> {
    let path = PathBuf::from(BOOT_ID);
    let raw = fs::read_to_string(&path).map_err(|source| IdentityError::Read {
        path: path.clone(),
        source,
    })?;
    let id = raw.trim();
    if id.is_empty() {
        return Err(IdentityError::Parse {
            path,
            reason: "it is empty".into(),
        });
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_id_is_readable() {
        assert!(!boot_id().expect("boot id").is_empty());
    }
}
