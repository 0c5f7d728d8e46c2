//! FleetLock: the reboot-coordination protocol of Fedora CoreOS's Zincati, served from the lock
//! table's semaphores.
//!
//! Protocol (<https://coreos.github.io/zincati/development/fleetlock/protocol/>): a client POSTs
//! `{"client_params":{"id":…,"group":…}}` with the header `fleet-lock-protocol: true` to
//! `<prefix>/v1/pre-reboot` (take a reboot slot; recursive) or `<prefix>/v1/steady-state`
//! (give it back if held). 200 means done; anything else is a refusal with a JSON
//! `{"kind","value"}` body whose `kind` is one of [`ErrorKind`].
//!
//! Mapping onto Locksmith:
//! - a group is the semaphore `reboot/<group>`; its size comes from [`FleetLockConfig`] and can
//!   be changed at runtime (`PUT /v1/fleetlock/groups/{group}`). Every pre-reboot resizes the
//!   semaphore to the size in force before deciding (a trusted acquire, see
//!   [`locksmith_core::Trusted`]), so a change always takes effect — the stored semaphore never
//!   keeps an old limit. Holders above a smaller size keep their slots; nobody new gets one until
//!   they are fewer than the new size.
//! - a holder's owner is synthetic: node = the client id, pid 1, start time 1, boot id and user
//!   `fleetlock`, purpose `fleetlock reboot group <group>`. The same id asking again is the same
//!   "process": it gets its own lease back (recursive lock), never a second slot.
//! - FleetLock clients do not heartbeat, so their leases do not expire (TTL
//!   [`locksmith_core::NO_EXPIRY_TTL_MS`]) unless `stale_after` is set; a holder that never comes
//!   back is freed by an operator's `locksmith break reboot/<group>`, like any lock.
//! - every grant and release is durable before the 200, like every other Locksmith reply.
//!
//! What it is not: a second lock implementation. Holders show in `locksmith locks`, `why`, the
//! audit trail, events and metrics like every other lease.

pub mod ops;
pub(crate) mod routes;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use locksmith_core::{NO_EXPIRY_TTL_MS, Owner, TableConfig, validate_resource};
use serde::Serialize;
use thiserror::Error;

/// Default URL prefix of the protocol endpoints: Zincati's `base_url` is
/// `http://HOST:7400/fleetlock/`.
pub const DEFAULT_PREFIX: &str = "/fleetlock";

/// FleetLock groups are the semaphores `reboot/<group>`.
pub const RESOURCE_PREFIX: &str = "reboot/";

/// The header every protocol request must carry, with the value `true`.
pub const PROTOCOL_HEADER: &str = "fleet-lock-protocol";

/// Longest client id accepted (an owner's node name has the same limit).
const MAX_ID_LEN: usize = 255;

/// FleetLock settings, from the server's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockConfig {
    /// URL path prefix of `/v1/pre-reboot` and `/v1/steady-state` (default `/fleetlock`; empty
    /// serves them at the root).
    pub prefix: String,
    /// Slots of a group that has no size of its own (default 1).
    pub default_slots: u32,
    /// Sizes of particular groups (`--fleetlock-group-slots group=N`).
    pub group_slots: BTreeMap<String, u32>,
    /// TTL of a FleetLock slot: a holder that has not asked again within it is reclaimed.
    /// `None` (the default): slots never expire — FleetLock clients do not heartbeat.
    pub stale_after: Option<Duration>,
}

impl Default for FleetLockConfig {
    fn default() -> Self {
        Self {
            prefix: DEFAULT_PREFIX.to_string(),
            default_slots: 1,
            group_slots: BTreeMap::new(),
            stale_after: None,
        }
    }
}

impl FleetLockConfig {
    /// Checks every setting; the error names the flag's subject and what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        normalize_prefix(&self.prefix)?;
        validate_slots(self.default_slots).map_err(|e| format!("default slots {e}"))?;
        for (group, slots) in &self.group_slots {
            validate_group(group).map_err(|e| format!("group {group:?}: {e}"))?;
            validate_slots(*slots).map_err(|e| format!("group {group:?}: slots {e}"))?;
        }
        if let Some(ttl) = self.stale_after {
            let min = TableConfig::default().min_ttl_ms;
            let ms = ttl.as_millis();
            if ms < u128::from(min) || ms > u128::from(NO_EXPIRY_TTL_MS) {
                return Err(format!(
                    "stale-after must be between {} s and {} days (got {ttl:?})",
                    min / 1000,
                    NO_EXPIRY_TTL_MS / 86_400_000
                ));
            }
        }
        Ok(())
    }
}

/// Checks a group name: non-empty, `^[a-zA-Z0-9.-]+$` (the protocol's rule), and such that
/// `reboot/<group>` is a valid resource name (so not `..`, at most 248 bytes).
pub fn validate_group(group: &str) -> Result<(), String> {
    if group.is_empty() {
        return Err("must not be empty".to_string());
    }
    if let Some(bad) = group
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || *c == '-'))
    {
        return Err(format!(
            "{bad:?} is not allowed; a group matches ^[a-zA-Z0-9.-]+$"
        ));
    }
    validate_resource(&resource_of(group)).map_err(|e| e.reason)
}

fn validate_slots(slots: u32) -> Result<(), String> {
    let max = TableConfig::default().max_slots;
    if slots == 0 || slots > max {
        return Err(format!("must be between 1 and {max} (got {slots})"));
    }
    Ok(())
}

/// `/fleetlock`, `fleetlock/`, `/a/b` → `/fleetlock`, `/fleetlock`, `/a/b`; `` and `/` → ``
/// (the root). Segments are letters, digits and `. _ -` (no `..`), so the routes built from it
/// are always valid.
fn normalize_prefix(prefix: &str) -> Result<String, String> {
    let trimmed = prefix.trim().trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for seg in trimmed.split('/') {
        let ok = !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !ok {
            return Err(format!(
                "prefix {prefix:?}: path segments must be letters, digits, '.', '_' or '-'"
            ));
        }
    }
    Ok(format!("/{trimmed}"))
}

/// The semaphore behind a group.
pub fn resource_of(group: &str) -> String {
    format!("{RESOURCE_PREFIX}{group}")
}

/// The synthetic owner of a FleetLock client's slot in `group`.
pub fn owner_of(id: &str, group: &str) -> Owner {
    locksmith_api::fleetlock::owner(id, group)
}

/// Where a group's size comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SlotsSource {
    /// `--fleetlock-slots` (no size of its own).
    Default,
    /// `--fleetlock-group-slots`.
    Flag,
    /// `PUT /v1/fleetlock/groups/{group}` since the server started.
    Runtime,
}

/// FleetLock's runtime state: the settings, plus the sizes operators changed since the server
/// started. Cheap to clone (clones share the sizes). Runtime changes live in memory: after a
/// restart the flags apply again.
#[derive(Debug, Clone)]
pub struct FleetLock {
    prefix: String,
    default_slots: u32,
    stale_after: Option<Duration>,
    /// Group → (size, where it came from).
    groups: Arc<RwLock<BTreeMap<String, (u32, SlotsSource)>>>,
}

/// FleetLock settings that [`FleetLockConfig::validate`] refuses: the server does not start
/// with them (the CLI checks its flags before this).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("FleetLock settings: {0}")]
pub struct InvalidFleetLock(pub String);

impl FleetLock {
    /// The runtime state for `config`, once [`FleetLockConfig::validate`] accepts it: a setting
    /// it refuses is an error, never quietly replaced by a default.
    pub fn new(config: FleetLockConfig) -> Result<Self, InvalidFleetLock> {
        config.validate().map_err(InvalidFleetLock)?;
        let prefix = normalize_prefix(&config.prefix).map_err(InvalidFleetLock)?;
        let groups = config
            .group_slots
            .into_iter()
            .map(|(group, slots)| (group, (slots, SlotsSource::Flag)))
            .collect();
        Ok(Self {
            prefix,
            default_slots: config.default_slots,
            stale_after: config.stale_after,
            groups: Arc::new(RwLock::new(groups)),
        })
    }

    /// The URL prefix of the protocol endpoints (empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The size in force for `group`, and where it comes from.
    pub fn slots(&self, group: &str) -> (u32, SlotsSource) {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(group)
            .copied()
            .unwrap_or((self.default_slots, SlotsSource::Default))
    }

    /// Slots of a group that has no size of its own.
    pub fn default_slots(&self) -> u32 {
        self.default_slots
    }

    /// The TTL of a slot, ms, when slots expire (`--fleetlock-stale-after`).
    pub fn stale_after_ms(&self) -> Option<u64> {
        self.stale_after.map(|_| self.ttl_ms())
    }

    /// Sets `group`'s size from now on (validated by the caller).
    fn set_slots(&self, group: &str, slots: u32) {
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(group.to_string(), (slots, SlotsSource::Runtime));
    }

    /// Every group with a size of its own.
    fn configured(&self) -> Vec<String> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The TTL a FleetLock slot is granted with.
    fn ttl_ms(&self) -> u64 {
        self.stale_after
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(NO_EXPIRY_TTL_MS))
            .unwrap_or(NO_EXPIRY_TTL_MS)
    }
}

// ---- errors ------------------------------------------------------------------------------------

/// The `kind` of a FleetLock error: a small fixed set, as the protocol asks (Zincati counts
/// them in its metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = FleetLockErrorKind)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 409: every slot of the group is held (by other ids).
    FailedLockSemaphoreFull,
    /// 409: an operator's hold (or a break's freeze, or a lock-delay) keeps the group closed.
    FailedLockFrozen,
    /// 503: the server could not take the slot (storage failed, or shutting down).
    FailedLock,
    /// 503: the server could not give the slot back (storage failed, or shutting down).
    FailedUnlock,
    /// 400: the body is not `{"client_params":{"id":…,"group":…}}` with a valid id and group.
    InvalidRequest,
    /// 400 without the `fleet-lock-protocol: true` header; 405 for a method other than POST.
    ProtocolError,
    /// 500: a bug.
    InternalError,
}

impl ErrorKind {
    /// Every kind, for documentation and tests.
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::FailedLockSemaphoreFull,
        ErrorKind::FailedLockFrozen,
        ErrorKind::FailedLock,
        ErrorKind::FailedUnlock,
        ErrorKind::InvalidRequest,
        ErrorKind::ProtocolError,
        ErrorKind::InternalError,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::FailedLockSemaphoreFull => "failed_lock_semaphore_full",
            ErrorKind::FailedLockFrozen => "failed_lock_frozen",
            ErrorKind::FailedLock => "failed_lock",
            ErrorKind::FailedUnlock => "failed_unlock",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ProtocolError => "protocol_error",
            ErrorKind::InternalError => "internal_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalized_and_odd_ones_refused() {
        assert_eq!(normalize_prefix("/fleetlock"), Ok("/fleetlock".to_string()));
        assert_eq!(normalize_prefix("fleetlock/"), Ok("/fleetlock".to_string()));
        assert_eq!(normalize_prefix("/a/b-c_d.e"), Ok("/a/b-c_d.e".to_string()));
        assert_eq!(normalize_prefix(""), Ok(String::new()));
        assert_eq!(normalize_prefix("/"), Ok(String::new()));
        for bad in ["/a//b", "/a/../b", "/{x}", "/a b", "/*rest", "/a/./b"] {
            assert!(normalize_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn groups_follow_the_protocol_rule() {
        for ok in ["default", "workers", "db-1", "a.b", "A9"] {
            assert_eq!(validate_group(ok), Ok(()), "{ok}");
        }
        let long = "g".repeat(249);
        for bad in ["", "a b", "a/b", "a_b", "..", "ü", long.as_str()] {
            assert!(validate_group(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kinds_are_few_and_distinct() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        let mut names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn config_validation_names_the_problem() {
        assert_eq!(FleetLockConfig::default().validate(), Ok(()));
        let bad = FleetLockConfig {
            default_slots: 0,
            ..FleetLockConfig::default()
        };
        assert!(bad.validate().is_err());
        let mut groups = BTreeMap::new();
        groups.insert("a_b".to_string(), 2);
        let bad = FleetLockConfig {
            group_slots: groups,
            ..FleetLockConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = FleetLockConfig {
            stale_after: Some(Duration::from_millis(10)),
            ..FleetLockConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    /// Bug pinned (issue 16, item 8): `FleetLock::new` quietly replaced settings that
    /// `validate` refuses (a bad prefix by `/fleetlock`, 0 slots by 1, a bad group dropped, a
    /// too short stale-after by none), so a server embedded without the CLI's checks served
    /// other settings than it was given. Each is now an error naming the setting.
    #[test]
    fn settings_that_validation_refuses_are_an_error_not_repaired() {
        let mut bad_group = BTreeMap::new();
        bad_group.insert("a_b".to_string(), 2);
        for (config, names) in [
            (
                FleetLockConfig {
                    prefix: "/a/../b".into(),
                    ..FleetLockConfig::default()
                },
                "prefix",
            ),
            (
                FleetLockConfig {
                    default_slots: 0,
                    ..FleetLockConfig::default()
                },
                "default slots",
            ),
            (
                FleetLockConfig {
                    group_slots: bad_group,
                    ..FleetLockConfig::default()
                },
                "group \"a_b\"",
            ),
            (
                FleetLockConfig {
                    stale_after: Some(Duration::from_millis(10)),
                    ..FleetLockConfig::default()
                },
                "stale-after",
            ),
        ] {
            match FleetLock::new(config) {
                Err(InvalidFleetLock(why)) => assert!(why.contains(names), "{why}"),
                Ok(fl) => panic!("repaired instead of refused: {fl:?}"),
            }
        }
    }

    #[test]
    fn a_runtime_size_overrides_flags_and_default() {
        let mut groups = BTreeMap::new();
        groups.insert("workers".to_string(), 3);
        let fl = FleetLock::new(FleetLockConfig {
            default_slots: 2,
            group_slots: groups,
            ..FleetLockConfig::default()
        })
        .expect("valid settings");
        assert_eq!(fl.slots("other"), (2, SlotsSource::Default));
        assert_eq!(fl.slots("workers"), (3, SlotsSource::Flag));
        let clone = fl.clone();
        clone.set_slots("workers", 1);
        assert_eq!(fl.slots("workers"), (1, SlotsSource::Runtime));
        assert_eq!(fl.ttl_ms(), NO_EXPIRY_TTL_MS);
    }
}
