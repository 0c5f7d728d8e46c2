//! The key layout under a prefix (see the crate docs): one place that spells every key.

/// The keys of one store, under its prefix (which ends in `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    prefix: String,
}

/// Width of the zero-padded decimal ids and seqs in keys: `u64::MAX` has 20 digits, so every
/// key of a kind has the same length and etcd's byte order is numeric order.
const WIDTH: usize = 20;

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: normalize_prefix(prefix),
        }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn lease(&self, id: u64) -> String {
        format!("{}leases/{id:0WIDTH$}", self.prefix)
    }

    pub(crate) fn hold(&self, id: u64) -> String {
        format!("{}holds/{id:0WIDTH$}", self.prefix)
    }

    pub(crate) fn audit(&self, seq: u64) -> String {
        format!("{}audit/{seq:0WIDTH$}", self.prefix)
    }

    pub(crate) fn leases_dir(&self) -> String {
        format!("{}leases/", self.prefix)
    }

    pub(crate) fn holds_dir(&self) -> String {
        format!("{}holds/", self.prefix)
    }

    /// The key of a domain's record. The space is `[a-z][a-z0-9_]*` (validated before any
    /// write), so the first `/` after `records/` ends it and no two records share a key.
    pub(crate) fn record(&self, space: &str, key: &str) -> String {
        format!("{}records/{space}/{key}", self.prefix)
    }

    pub(crate) fn records_dir(&self, space: &str) -> String {
        format!("{}records/{space}/", self.prefix)
    }

    pub(crate) fn audit_dir(&self) -> String {
        format!("{}audit/", self.prefix)
    }

    pub(crate) fn meta_dir(&self) -> String {
        format!("{}meta/", self.prefix)
    }

    pub(crate) fn fence_high_water(&self) -> String {
        format!("{}meta/fence_high_water", self.prefix)
    }

    pub(crate) fn audit_seq(&self) -> String {
        format!("{}meta/audit_seq", self.prefix)
    }

    pub(crate) fn commit_marker(&self) -> String {
        format!("{}meta/commit", self.prefix)
    }

    /// The first key after every audit key `<= seq`: the exclusive end of a range that ends
    /// at `seq`.
    pub(crate) fn audit_after(&self, seq: u64) -> String {
        match seq.checked_add(1) {
            Some(next) => self.audit(next),
            None => range_end(&self.audit_dir()),
        }
    }
}

/// The key of the leader election under `prefix`.
pub(crate) fn leader_key(prefix: &str) -> String {
    format!("{}leader", normalize_prefix(prefix))
}

/// `prefix`, ending in exactly one more `/` if it did not end in one.
pub(crate) fn normalize_prefix(prefix: &str) -> String {
    if prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    }
}

/// The exclusive end of the range of every key starting with `dir` (which ends in `/`, so
/// incrementing its last byte stays ASCII).
pub(crate) fn range_end(dir: &str) -> String {
    let mut bytes = dir.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The exclusive end of the range of every key that starts with `prefix` (any bytes): the
/// prefix with its last byte below `0xff` incremented and what follows dropped; empty (etcd's
/// "to the end of the keyspace") if every byte is `0xff`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    end
}

/// The id in a key `<dir><20 digits>`, if it is one.
pub(crate) fn parse_id(dir: &str, key: &[u8]) -> Option<u64> {
    let digits = key.strip_prefix(dir.as_bytes())?;
    if digits.len() != WIDTH || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_parse_back() {
        let keys = Keys::new("/locksmith");
        assert_eq!(keys.prefix(), "/locksmith/");
        assert_eq!(keys.lease(42), "/locksmith/leases/00000000000000000042");
        assert!(keys.audit(9) < keys.audit(10));
        assert!(keys.audit(u64::MAX) < keys.audit_after(u64::MAX));
        assert_eq!(keys.audit_after(9), keys.audit(10));
        assert_eq!(range_end("/a/audit/"), "/a/audit0");
        for id in [0, 1, 42, u64::MAX] {
            assert_eq!(
                parse_id(&keys.holds_dir(), keys.hold(id).as_bytes()),
                Some(id)
            );
        }
        assert_eq!(parse_id(&keys.holds_dir(), b"/locksmith/holds/12"), None);
        assert_eq!(parse_id(&keys.holds_dir(), keys.lease(1).as_bytes()), None);
        assert_eq!(leader_key("/locksmith/"), "/locksmith/leader");
    }

    #[test]
    fn a_record_prefix_ends_where_its_keys_do() {
        let keys = Keys::new("/l/");
        assert_eq!(keys.record("configs", "a/b"), "/l/records/configs/a/b");
        assert_eq!(prefix_end(b"/l/records/a/"), b"/l/records/a0");
        assert_eq!(prefix_end("x/é".as_bytes()), b"x/\xc3\xaa");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"");
        // A neighbouring space is outside the range.
        let end = prefix_end(keys.records_dir("a").as_bytes());
        assert!(keys.record("ab", "x").as_bytes() >= end.as_slice());
        assert!(keys.record("a", "\u{10FFFF}").as_bytes() < end.as_slice());
    }
}
