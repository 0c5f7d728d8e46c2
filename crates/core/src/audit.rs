//! The audit trail: one append-only record per grant, release, expiry, reclaim, hold, ack and
//! break — and per event of any other domain (a config written, a rollout started). The table
//! and the domains emit them as mutations (so they are durable in the same batch as the change
//! they describe); the server also streams them as events and counts them as metrics. There is
//! one log and one `seq` for every domain.
//!
//! JSON: the common fields of [`AuditRecord`] and, flattened beside them, the kind: `"kind":
//! "granted"` (an ended lease adds its `cause` and the cause's fields), or for a domain event
//! `"kind": "config_written", "detail": {…}`. A `kind` that is not one of the lock table's reads
//! back as [`AuditKind::Domain`], so a reader (the CLI, an SSE client, the etcd store) needs no
//! change when a domain adds a kind.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{EndCause, InvalidRequest};
use crate::hold::HoldId;
use crate::ids::{FenceToken, LeaseId};
use crate::owner::Owner;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditKind {
    /// A lease was granted.
    Granted,
    /// A lease ended (released, expired, reclaimed as a ghost, or broken).
    Ended {
        /// Why.
        cause: EndCause,
    },
    /// A hold was placed (active at once, or pending acknowledgement).
    HoldPlaced,
    /// A pending hold was acknowledged and took effect.
    HoldAcked,
    /// A hold was lifted by an operator.
    HoldLifted,
    /// A hold ran out (or lapsed unacknowledged).
    HoldExpired,
    /// An operator broke the lock: the fence advanced to `token`.
    Broke,
    /// An event of another domain (configs, agents, rollouts): its own kind and detail.
    Domain(DomainEvent),
}

/// An audit event of a domain other than the lock table's: what a domain adds to the one audit
/// log without a change to the store, the codec or the readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEvent {
    /// What happened, e.g. `config_written`: `[a-z][a-z0-9_]*`, at most
    /// [`DomainEvent::MAX_KIND_LEN`] bytes, never a kind or label of the lock table (see
    /// [`DomainEvent::new`]). It is the record's [`label`](AuditRecord::label).
    pub kind: String,
    /// The domain's details (the revision written, the wave started), as the domain defines
    /// them; `null` when there are none.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// The JSON `kind`s of the lock table's records: [`LockKind`] reads these, and any other `kind`
/// reads as a domain event.
const LOCK_KINDS: &[&str] = &[
    "granted",
    "ended",
    "hold_placed",
    "hold_acked",
    "hold_lifted",
    "hold_expired",
    "broke",
];

/// The labels of ended leases ([`EndCause::label`]): a record's [`label`](AuditRecord::label)
/// besides the kinds.
const END_LABELS: &[&str] = &[
    "released",
    "expired",
    "node_rebooted",
    "process_died",
    "broken",
    "unknown",
];

/// Whether `kind` is a lock-table kind or label: a name a domain event may not take, because
/// its JSON would read back as the lock table's (or be counted and shown as one).
fn is_lock_name(kind: &str) -> bool {
    LOCK_KINDS.contains(&kind) || END_LABELS.contains(&kind)
}

impl DomainEvent {
    /// The longest `kind`, in bytes.
    pub const MAX_KIND_LEN: usize = 64;

    /// A domain event, checking `kind`: `[a-z][a-z0-9_]*` of at most [`Self::MAX_KIND_LEN`]
    /// bytes, and none of the lock table's kinds and labels (`granted`, `ended`, `released`,
    /// `hold_placed`, …), which would read back or be counted as the lock table's.
    pub fn new(kind: impl Into<String>, detail: serde_json::Value) -> Result<Self, InvalidRequest> {
        let kind = kind.into();
        let field = "kind";
        let well_formed = kind.len() <= Self::MAX_KIND_LEN
            && kind.starts_with(|c: char| c.is_ascii_lowercase())
            && kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !well_formed {
            return Err(InvalidRequest::new(
                field,
                format!(
                    "{kind:?} must be a-z, 0-9 and _, start with a letter, and be at most {} bytes",
                    Self::MAX_KIND_LEN
                ),
            ));
        }
        if is_lock_name(&kind) {
            return Err(InvalidRequest::new(
                field,
                format!("{kind:?} is the lock table's own; name the domain's event otherwise"),
            ));
        }
        Ok(Self { kind, detail })
    }
}

/// The lock table's kinds as serde sees them (internally tagged by `kind`, an ended lease's
/// cause flattened beside it): the JSON every client already reads.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
enum LockKind<C> {
    Granted,
    Ended {
        #[serde(flatten)]
        cause: C,
    },
    HoldPlaced,
    HoldAcked,
    HoldLifted,
    HoldExpired,
    Broke,
}

impl Serialize for AuditKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let lock: LockKind<&EndCause> = match self {
            AuditKind::Domain(event) => return event.serialize(serializer),
            AuditKind::Granted => LockKind::Granted,
            AuditKind::Ended { cause } => LockKind::Ended { cause },
            AuditKind::HoldPlaced => LockKind::HoldPlaced,
            AuditKind::HoldAcked => LockKind::HoldAcked,
            AuditKind::HoldLifted => LockKind::HoldLifted,
            AuditKind::HoldExpired => LockKind::HoldExpired,
            AuditKind::Broke => LockKind::Broke,
        };
        lock.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AuditKind {
    /// A lock-table kind as it always read; any other `kind` as a [`DomainEvent`] (its
    /// `detail`, `null` if absent). Unchecked: what was stored is read back as it is.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut fields = serde_json::Map::deserialize(deserializer)?;
        let kind = match fields.get("kind") {
            Some(serde_json::Value::String(kind)) => kind.as_str(),
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "`kind` must be a string, not {other}"
                )));
            }
            None => return Err(D::Error::missing_field("kind")),
        };
        if !LOCK_KINDS.contains(&kind) {
            return Ok(AuditKind::Domain(DomainEvent {
                kind: kind.to_owned(),
                detail: fields.remove("detail").unwrap_or(serde_json::Value::Null),
            }));
        }
        let lock = LockKind::<EndCause>::deserialize(serde_json::Value::Object(fields))
            .map_err(D::Error::custom)?;
        Ok(match lock {
            LockKind::Granted => AuditKind::Granted,
            LockKind::Ended { cause } => AuditKind::Ended { cause },
            LockKind::HoldPlaced => AuditKind::HoldPlaced,
            LockKind::HoldAcked => AuditKind::HoldAcked,
            LockKind::HoldLifted => AuditKind::HoldLifted,
            LockKind::HoldExpired => AuditKind::HoldExpired,
            LockKind::Broke => AuditKind::Broke,
        })
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the log: strictly increasing, never reused.
    pub seq: u64,
    /// Wall-clock time, Unix ms.
    pub at_ms: u64,
    /// The resource concerned.
    pub resource: String,
    /// What happened.
    #[serde(flatten)]
    pub kind: AuditKind,
    /// The lease concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseId>,
    /// The fencing token concerned (for a break: the advanced fence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<FenceToken>,
    /// The lease's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The hold concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldId>,
    /// The operator who acted (hold, ack, lift, break).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The operator's reason (for holds and breaks). Serialized as `note`, because an ended
    /// lease's cause (flattened into the same object) may carry a `reason` of its own.
    #[serde(default, rename = "note", skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who caused it: the authenticated principal of the request whose operation wrote it (for
    /// a grant from a queue, the waiter's). None for what the server did on its own (expiry,
    /// a boot's reclaim, a probe) and with authentication off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<AuditPrincipal>,
}

/// The authenticated principal an audit record names: the token's id and name, as they were
/// when the record was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPrincipal {
    /// The token's id (`tok-3`).
    pub token: String,
    /// The token's name.
    pub name: String,
}

impl std::fmt::Display for AuditPrincipal {
    /// `alice (tok-3)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.token)
    }
}

impl AuditRecord {
    /// A short label: `granted`, `released`, `expired`, `node_rebooted`, `process_died`,
    /// `broken`, `hold_placed`, `hold_acked`, `hold_lifted`, `hold_expired`, `broke`, or a
    /// domain event's own kind (`config_written`).
    pub fn label(&self) -> &str {
        match &self.kind {
            AuditKind::Granted => "granted",
            AuditKind::Ended { cause } => cause.label(),
            AuditKind::HoldPlaced => "hold_placed",
            AuditKind::HoldAcked => "hold_acked",
            AuditKind::HoldLifted => "hold_lifted",
            AuditKind::HoldExpired => "hold_expired",
            AuditKind::Broke => "broke",
            AuditKind::Domain(event) => &event.kind,
        }
    }
}

impl AuditRecord {
    /// A record about `resource`; `at_ms` is filled in by the table when appended, `seq` by the
    /// driver as it seals the batch (one sequence for every domain).
    pub fn new(resource: &str, kind: AuditKind) -> Self {
        Self {
            seq: 0,
            at_ms: 0,
            resource: resource.to_string(),
            kind,
            lease: None,
            token: None,
            owner: None,
            hold: None,
            operator: None,
            reason: None,
            principal: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: AuditKind) -> AuditRecord {
        AuditRecord {
            seq: 7,
            at_ms: 1_700_000_000_000,
            lease: Some(LeaseId(3)),
            ..AuditRecord::new("fleet/app.conf", kind)
        }
    }

    fn json(record: &AuditRecord) -> serde_json::Value {
        serde_json::to_value(record).unwrap_or_default()
    }

    /// Existing clients parse these: the lock table's JSON must not change.
    #[test]
    fn the_lock_tables_kinds_keep_their_json() {
        let broken = EndCause::Broken {
            by: "alice".to_owned(),
            reason: "stuck".to_owned(),
        };
        let cases = [
            (AuditKind::Granted, serde_json::json!({"kind": "granted"})),
            (
                AuditKind::Ended { cause: broken },
                serde_json::json!({"kind": "ended", "cause": "broken", "by": "alice", "reason": "stuck"}),
            ),
            (
                AuditKind::Ended {
                    cause: EndCause::Released,
                },
                serde_json::json!({"kind": "ended", "cause": "released"}),
            ),
            (
                AuditKind::HoldAcked,
                serde_json::json!({"kind": "hold_acked"}),
            ),
            (AuditKind::Broke, serde_json::json!({"kind": "broke"})),
        ];
        for (kind, fields) in cases {
            let mut want = serde_json::json!({
                "seq": 7, "at_ms": 1_700_000_000_000u64, "resource": "fleet/app.conf", "lease": 3
            });
            if let (Some(want), serde_json::Value::Object(fields)) = (want.as_object_mut(), fields)
            {
                want.extend(fields);
            }
            let record = record(kind);
            assert_eq!(json(&record), want);
            let back: AuditRecord = serde_json::from_value(want).expect("reads back");
            assert_eq!(back, record);
        }
    }

    #[test]
    fn a_domain_event_is_its_kind_and_detail_beside_the_common_fields() {
        let event = DomainEvent::new(
            "config_written",
            serde_json::json!({"revision": 4, "sha256": "ab12"}),
        )
        .expect("a valid kind");
        let record = record(AuditKind::Domain(event));
        assert_eq!(record.label(), "config_written");
        let value = json(&record);
        assert_eq!(
            value,
            serde_json::json!({
                "seq": 7, "at_ms": 1_700_000_000_000u64, "resource": "fleet/app.conf", "lease": 3,
                "kind": "config_written", "detail": {"revision": 4, "sha256": "ab12"}
            })
        );
        let back: AuditRecord = serde_json::from_value(value).expect("reads back");
        assert_eq!(back, record);
    }

    /// A reader built before a domain existed still reads its events, as domain events.
    #[test]
    fn an_unknown_kind_reads_back_as_a_domain_event() {
        let text =
            r#"{"seq":9,"at_ms":1,"resource":"r","kind":"rollout_started","operator":"bob"}"#;
        let record: AuditRecord = serde_json::from_str(text).expect("reads");
        assert_eq!(
            record.kind,
            AuditKind::Domain(DomainEvent {
                kind: "rollout_started".to_owned(),
                detail: serde_json::Value::Null,
            })
        );
        assert_eq!(record.operator.as_deref(), Some("bob"));
        for bad in [
            r#"{"seq":9,"at_ms":1,"resource":"r"}"#,
            r#"{"seq":9,"at_ms":1,"resource":"r","kind":5}"#,
            r#"{"seq":9,"at_ms":1,"resource":"r","kind":"ended","cause":"no_such_cause"}"#,
        ] {
            assert!(serde_json::from_str::<AuditRecord>(bad).is_err(), "{bad}");
        }
    }

    /// Every name the lock table writes (a record's `kind`) or shows (its label) is one a
    /// domain event may not take.
    #[test]
    fn every_kind_and_label_of_the_lock_table_is_reserved() {
        let causes = [
            EndCause::Released,
            EndCause::Expired,
            EndCause::NodeRebooted {
                new_boot_id: "b".to_owned(),
            },
            EndCause::ProcessDied {
                reported_by: "r".to_owned(),
            },
            EndCause::Broken {
                by: "o".to_owned(),
                reason: "x".to_owned(),
            },
            EndCause::Unknown,
        ];
        let mut kinds = vec![
            AuditKind::Granted,
            AuditKind::HoldPlaced,
            AuditKind::HoldAcked,
            AuditKind::HoldLifted,
            AuditKind::HoldExpired,
            AuditKind::Broke,
        ];
        kinds.extend(causes.into_iter().map(|cause| AuditKind::Ended { cause }));
        for kind in kinds {
            let record = record(kind);
            let written = json(&record)["kind"].as_str().map(str::to_owned);
            for name in [written.as_deref().unwrap_or_default(), record.label()] {
                assert!(is_lock_name(name), "{name:?} is not reserved");
                assert!(
                    DomainEvent::new(name, serde_json::Value::Null).is_err(),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn domain_kinds_are_identifiers_and_not_the_lock_tables() {
        for bad in [
            "",
            "Config",
            "9lives",
            "config-written",
            "granted",
            "released",
            "broke",
            "unknown",
        ] {
            let refused = DomainEvent::new(bad, serde_json::Value::Null);
            assert_eq!(
                refused.map_err(|e| e.field),
                Err("kind".to_owned()),
                "{bad:?}"
            );
        }
        let longest = "a".repeat(DomainEvent::MAX_KIND_LEN);
        assert!(DomainEvent::new(longest.as_str(), serde_json::Value::Null).is_ok());
        assert!(DomainEvent::new(format!("{longest}a"), serde_json::Value::Null).is_err());
    }
}
