//! Operator identities: the names under which holds are placed, acknowledged and lifted, and
//! locks broken.
//!
//! An operator's name arrives as text the operator typed (`--operator`, `$LOCKSMITH_OPERATOR`,
//! or `user@node`), so the same person shows up as `alice`, `Alice` or `alice ` depending on the
//! shell. Where the table asks "is this the same operator?" — a hold's placer may not
//! acknowledge it, because a second person must — a verbatim comparison would let the placer
//! through by typing their name in capitals. Every such comparison goes through
//! [`same_operator`], which compares the names in one normal form ([`operator_key`]). Names are
//! stored and shown as given; only comparisons are normalized.
//!
//! Validation (empty, all-space, control characters, length) is the table's `require_text`,
//! applied to every operator field before anything is compared.

/// The form in which operator names are compared: surrounding whitespace trimmed, letters
/// lower-cased (Unicode lower case, so `ÉVA` and `éva` are one name).
pub fn operator_key(name: &str) -> String {
    name.trim().to_lowercase()
}

/// True when `a` and `b` name the same operator: equal once both are in [`operator_key`] form.
/// The one place operator identities are compared.
pub fn same_operator(a: &str, b: &str) -> bool {
    operator_key(a) == operator_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_surrounding_space_do_not_make_another_operator() {
        assert!(same_operator("alice", "alice"));
        assert!(same_operator("alice", "ALICE"));
        assert!(same_operator("alice", " alice "));
        assert!(same_operator("alice@ops", "Alice@OPS\t"));
        assert!(same_operator("Éva", "éVA"));
        assert!(!same_operator("alice", "bob"));
        assert!(!same_operator("alice", "alice2"));
        assert!(
            !same_operator("al ice", "alice"),
            "inner space is part of the name"
        );
    }
}
