//! What becomes current: drafts and their promotion, rollback, and the schema in force.

mod common;

use common::{Records, T0, request, writer};
use locksmith_config::store::SCHEMAS;
use locksmith_config::{
    Configs, Format, PromoteError, RevisionKind, RollbackError, SetSchemaError, WriteError,
    sha256_hex,
};
use locksmith_core::FenceToken;

const NAME: &str = "aim_lock_config.conf";
const SCHEMA: &[u8] = br#"{"properties": {"aim_sensitivity": {"type": "number", "maximum": 1}}}"#;

/// Writes and persists; returns the new revision number.
fn write(configs: &mut Configs, records: &mut Records, content: &str, draft: bool) -> u64 {
    let applied = configs
        .write(request(NAME, Format::Conf, content, draft), T0)
        .expect("written");
    records.apply(&applied.mutations);
    applied.value.rev
}

#[test]
fn drafts_are_not_current_until_promoted() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "aim_sensitivity = 0.1\n", false);
    let draft = write(&mut configs, &mut records, "aim_sensitivity = 0.2\n", true);
    assert_eq!(draft, 2);
    let head = configs.head(NAME).expect("a head");
    assert_eq!((head.current, head.latest), (Some(1), 2));
    let meta = configs.revision(NAME, 2).expect("the draft").clone();
    assert!(meta.draft);
    assert_eq!(meta.base, Some(1));

    let content = records.content(&configs, NAME, 2);
    let applied = configs
        .promote(NAME, 2, &content, &writer(2), T0 + 1)
        .expect("promoted");
    records.apply(&applied.mutations);
    assert_eq!(applied.event.kind, "config_promoted");
    let promoted = applied.value;
    assert_eq!(promoted.rev, 3);
    assert_eq!(promoted.kind, RevisionKind::Promoted { from: 2 });
    assert!(!promoted.draft);
    assert_eq!(promoted.sha256, meta.sha256);
    assert_eq!(promoted.token, FenceToken(4_702));
    assert_eq!(configs.head(NAME).and_then(|h| h.current), Some(3));
    // The draft itself never changes.
    assert!(configs.revision(NAME, 2).expect("the draft").draft);
    // No new blob: the content was stored with the draft.
    assert_eq!(applied.mutations.len(), 2);

    // A retried promotion is told it already happened.
    assert_eq!(
        configs.promote(NAME, 2, &content, &writer(2), T0 + 2),
        Err(PromoteError::AlreadyPromoted {
            name: NAME.to_owned(),
            rev: 2,
            current: 3
        })
    );
    let one = records.content(&configs, NAME, 1);
    assert_eq!(
        configs.promote(NAME, 1, &one, &writer(2), T0),
        Err(PromoteError::NotADraft {
            name: NAME.to_owned(),
            rev: 1
        })
    );
}

#[test]
fn the_first_revision_may_be_a_draft() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "a = 1\n", true);
    assert_eq!(configs.head(NAME).and_then(|h| h.current), None);
    assert_eq!(configs.current(NAME), None);
    let content = records.content(&configs, NAME, 1);
    let applied = configs
        .promote(NAME, 1, &content, &writer(1), T0)
        .expect("promoted");
    assert_eq!(applied.value.rev, 2);
}

#[test]
fn promoting_a_draft_whose_base_is_no_longer_current_is_refused() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "a = 1\n", false);
    write(&mut configs, &mut records, "a = 2\n", true);
    write(&mut configs, &mut records, "a = 3\n", false);
    let content = records.content(&configs, NAME, 2);
    let before = configs.clone();
    let e = configs
        .promote(NAME, 2, &content, &writer(1), T0)
        .expect_err("refused");
    assert_eq!(
        e,
        PromoteError::DraftOutdated {
            name: NAME.to_owned(),
            rev: 2,
            base: Some(1),
            current: 3
        }
    );
    assert!(
        e.to_string().contains("write a new draft on top of it"),
        "{e}"
    );
    assert_eq!(configs, before);
}

#[test]
fn rollback_creates_a_new_revision_with_the_old_content() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "a = 1\n", false);
    write(&mut configs, &mut records, "a = 2\n", false);
    let old = records.content(&configs, NAME, 1);
    let applied = configs
        .rollback(NAME, 1, &old, &writer(3), T0 + 5)
        .expect("rolled back");
    records.apply(&applied.mutations);
    assert_eq!(applied.event.kind, "config_rolled_back");
    let meta = applied.value;
    assert_eq!(meta.rev, 3);
    assert_eq!(meta.kind, RevisionKind::RolledBack { from: 1 });
    assert_eq!(meta.sha256, sha256_hex(b"a = 1\n"));
    assert_eq!(meta.message, "roll back to rev 1");
    assert_eq!(meta.token, FenceToken(4_703));
    assert_eq!(configs.head(NAME).and_then(|h| h.current), Some(3));
    assert_eq!(records.content(&configs, NAME, 3), b"a = 1\n");
    // Revision 2 is still there, unchanged.
    assert_eq!(records.content(&configs, NAME, 2), b"a = 2\n");

    let e = configs.rollback(NAME, 9, &old, &writer(3), T0);
    assert_eq!(
        e,
        Err(RollbackError::NoSuchRevision {
            name: NAME.to_owned(),
            rev: 9
        })
    );
    assert!(matches!(
        configs.rollback("nope", 1, &old, &writer(3), T0),
        Err(RollbackError::NoSuchConfig { .. })
    ));
    // The content handed in must be the revision's: anything else is the caller's bug.
    assert!(matches!(
        configs.rollback(NAME, 2, &old, &writer(3), T0),
        Err(RollbackError::WrongContent(_))
    ));
}

#[test]
fn rolling_back_to_a_draft_is_refused() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "a = 1\n", false);
    write(&mut configs, &mut records, "a = 2\n", true);
    let content = records.content(&configs, NAME, 2);
    assert_eq!(
        configs.rollback(NAME, 2, &content, &writer(1), T0),
        Err(RollbackError::IsADraft {
            name: NAME.to_owned(),
            rev: 2
        })
    );
}

#[test]
fn a_schema_refusal_leaves_nothing_changed() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    let applied = configs
        .set_schema(NAME, SCHEMA, None, &writer(1).author, T0)
        .expect("set");
    records.apply(&applied.mutations);
    assert_eq!(applied.event.kind, "config_schema_set");
    assert_eq!(records.get(SCHEMAS, NAME), Some(SCHEMA));
    write(&mut configs, &mut records, "aim_sensitivity = 0.5\n", false);
    let before = configs.clone();
    let e = configs
        .write(
            request(
                NAME,
                Format::Conf,
                "# c\n\n\naim_sensitivity = 1.7\n",
                false,
            ),
            T0,
        )
        .expect_err("refused");
    assert_eq!(
        e.to_string(),
        "the content fails the schema: aim_sensitivity: 1.7 is greater than the maximum of 1 (line 4)"
    );
    assert!(matches!(e, WriteError::Schema(ref v) if v.len() == 1));
    assert_eq!(configs, before);
    // A draft is checked too.
    assert!(
        configs
            .write(
                request(NAME, Format::Conf, "aim_sensitivity = 2\n", true),
                T0
            )
            .is_err()
    );
    assert_eq!(configs, before);
    assert_eq!(records.restore(), configs);
}

#[test]
fn a_schema_the_current_revision_fails_is_refused() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "aim_sensitivity = 3\n", false);
    let current = records.content(&configs, NAME, 1);
    let before = configs.clone();
    let e = configs
        .set_schema(NAME, SCHEMA, Some(&current), &writer(1).author, T0)
        .expect_err("refused");
    assert!(
        matches!(&e, SetSchemaError::CurrentFails { rev: 1, violations, .. } if violations.len() == 1),
        "{e:?}"
    );
    assert!(e.to_string().contains("fix the config first"), "{e}");
    assert_eq!(configs, before);
    // Without the current content the store cannot check, and says so.
    assert!(matches!(
        configs.set_schema(NAME, SCHEMA, None, &writer(1).author, T0),
        Err(SetSchemaError::WrongContent(_))
    ));
    assert!(matches!(
        configs.set_schema(
            NAME,
            b"{\"type\": 5}",
            Some(&current),
            &writer(1).author,
            T0
        ),
        Err(SetSchemaError::Invalid(_))
    ));
}

#[test]
fn promotion_and_rollback_recheck_against_the_schema_in_force() {
    let mut configs = Configs::new();
    let mut records = Records::default();
    write(&mut configs, &mut records, "aim_sensitivity = 5\n", false); // 1
    write(&mut configs, &mut records, "aim_sensitivity = 0.5\n", false); // 2
    write(&mut configs, &mut records, "aim_sensitivity = 7\n", true); // 3, draft on 2
    let current = records.content(&configs, NAME, 2);
    let applied = configs
        .set_schema(NAME, SCHEMA, Some(&current), &writer(1).author, T0)
        .expect("current passes");
    records.apply(&applied.mutations);
    let one = records.content(&configs, NAME, 1);
    assert!(matches!(
        configs.rollback(NAME, 1, &one, &writer(1), T0),
        Err(RollbackError::Schema { rev: 1, .. })
    ));
    let three = records.content(&configs, NAME, 3);
    assert!(matches!(
        configs.promote(NAME, 3, &three, &writer(1), T0),
        Err(PromoteError::Schema { rev: 3, .. })
    ));
    assert_eq!(configs.head(NAME).and_then(|h| h.current), Some(2));
}
