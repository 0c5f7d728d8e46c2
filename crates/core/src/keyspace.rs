//! The generic records of the durable model: a domain's records (config revisions, agents,
//! rollouts) live in a keyspace of their own — a *space* — under string keys, each stored and
//! replaced whole as opaque bytes ([`Mutation::PutRecord`](crate::Mutation::PutRecord)). The
//! store never decodes a value, so a domain adds a record kind without touching the store, the
//! codec or the etcd backend.
//!
//! The limits below are the contract between a domain and every backend: a domain validates
//! what it is about to write (so that a client's mistake is a 400 naming the field), and a store
//! refuses a batch holding a record outside them before writing any of it — a space name is part
//! of a key on etcd (`records/<space>/<key>`), so a `/` in it would make two records collide.

use crate::error::InvalidRequest;

/// Longest space name, in bytes.
pub const MAX_SPACE_LEN: usize = 32;

/// Longest record key, in bytes.
pub const MAX_RECORD_KEY_LEN: usize = 1024;

/// Largest record value, in bytes. Configs are at most 1 MiB; the rest is headroom. A value
/// this large is still one etcd request: run etcd with `--max-request-bytes` above it (see the
/// etcd crate's README).
pub const MAX_RECORD_VALUE_LEN: usize = 16 * 1024 * 1024;

/// Checks a space name: 1–32 bytes of `[a-z][a-z0-9_]*` (`configs`, `config_revisions`).
pub fn validate_space(space: &str) -> Result<(), InvalidRequest> {
    let field = "space";
    let mut chars = space.chars();
    match chars.next() {
        None => return Err(InvalidRequest::new(field, "must not be empty")),
        Some(first) if !first.is_ascii_lowercase() => {
            return Err(InvalidRequest::new(
                field,
                format!("{space:?} must start with a lowercase letter a-z"),
            ));
        }
        Some(_) => {}
    }
    if space.len() > MAX_SPACE_LEN {
        return Err(InvalidRequest::new(
            field,
            format!("must be at most {MAX_SPACE_LEN} bytes"),
        ));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        return Err(InvalidRequest::new(
            field,
            format!("{bad:?} is not allowed in {space:?}; use a-z, 0-9 and _"),
        ));
    }
    Ok(())
}

/// Checks where a record is filed: a valid space ([`validate_space`]) and a key of 1–1,024
/// bytes of UTF-8 (any characters: the key is never split or parsed).
pub fn validate_record_key(space: &str, key: &str) -> Result<(), InvalidRequest> {
    validate_space(space)?;
    if key.is_empty() {
        return Err(InvalidRequest::new("key", "must not be empty"));
    }
    if key.len() > MAX_RECORD_KEY_LEN {
        return Err(InvalidRequest::new(
            "key",
            format!(
                "is {} bytes; at most {MAX_RECORD_KEY_LEN} are allowed",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a record value's size: at most [`MAX_RECORD_VALUE_LEN`] bytes (empty is allowed).
pub fn validate_record_value(value: &[u8]) -> Result<(), InvalidRequest> {
    if value.len() > MAX_RECORD_VALUE_LEN {
        return Err(InvalidRequest::new(
            "value",
            format!(
                "is {} bytes; at most {MAX_RECORD_VALUE_LEN} are allowed",
                value.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_are_short_lowercase_identifiers() {
        for ok in [
            "a",
            "configs",
            "config_revisions",
            "agents2",
            &"a".repeat(32),
        ] {
            assert_eq!(validate_space(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Configs",
            "1configs",
            "_x",
            "con/figs",
            "con figs",
            "conf-igs",
            "cönfigs",
            &"a".repeat(33),
        ] {
            assert_eq!(
                validate_space(bad).map_err(|e| e.field),
                Err("space".to_owned()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_are_non_empty_and_at_most_a_kibibyte() {
        let longest = "ключ".repeat(128); // 1,024 bytes of two-byte characters
        assert_eq!(longest.len(), MAX_RECORD_KEY_LEN);
        for ok in ["a", "fleet/node-1/app.conf@7", " ", longest.as_str()] {
            assert_eq!(validate_record_key("configs", ok), Ok(()), "{ok:?}");
        }
        let too_long = format!("{longest}x");
        for bad in ["", too_long.as_str()] {
            assert_eq!(
                validate_record_key("configs", bad).map_err(|e| e.field),
                Err("key".to_owned())
            );
        }
        assert_eq!(
            validate_record_key("Configs", "a").map_err(|e| e.field),
            Err("space".to_owned())
        );
    }

    #[test]
    fn values_are_at_most_16_mib() {
        assert_eq!(validate_record_value(&[]), Ok(()));
        assert_eq!(
            validate_record_value(&vec![0; MAX_RECORD_VALUE_LEN]),
            Ok(())
        );
        assert_eq!(
            validate_record_value(&vec![0; MAX_RECORD_VALUE_LEN + 1]).map_err(|e| e.field),
            Err("value".to_owned())
        );
    }
}
