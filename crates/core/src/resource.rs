//! Resource names: `configs/aim_lock_config.conf`, `reboot/default`.

use crate::error::InvalidRequest;

/// Longest accepted resource name, in bytes.
pub const MAX_RESOURCE_LEN: usize = 255;

/// Checks a resource name: 1–255 bytes of `A-Z a-z 0-9 . _ - / : @ + =`, not starting or ending
/// with `/` and with no empty (`//`) or `..` path segment — names double as config paths later.
pub fn validate_resource(name: &str) -> Result<(), InvalidRequest> {
    let field = "resource";
    if name.is_empty() {
        return Err(InvalidRequest::new(field, "must not be empty"));
    }
    if name.len() > MAX_RESOURCE_LEN {
        return Err(InvalidRequest::new(
            field,
            format!("must be at most {MAX_RESOURCE_LEN} bytes"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-/:@+=".contains(*c)))
    {
        return Err(InvalidRequest::new(
            field,
            format!("{bad:?} is not allowed; use letters, digits and . _ - / : @ + ="),
        ));
    }
    if name.starts_with('/') || name.ends_with('/') {
        return Err(InvalidRequest::new(field, "must not start or end with '/'"));
    }
    if name.split('/').any(|seg| seg.is_empty() || seg == "..") {
        return Err(InvalidRequest::new(
            field,
            "must not contain empty or '..' segments",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_config_and_reboot_names() {
        for ok in [
            "aim_lock_config.conf",
            "configs/aim_lock_config.conf",
            "reboot/default",
            "a",
        ] {
            assert!(validate_resource(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_empty_long_and_odd_names() {
        let long = "x".repeat(MAX_RESOURCE_LEN + 1);
        for bad in [
            "",
            " ",
            "a b",
            "/abs",
            "trail/",
            "a//b",
            "a/../b",
            "tab\t",
            long.as_str(),
        ] {
            assert!(validate_resource(bad).is_err(), "{bad:?}");
        }
    }
}
