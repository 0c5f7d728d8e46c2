//! FleetLock's request functions: take and give back a reboot slot (the protocol), and the
//! operators' view and sizing of the groups.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use locksmith_api::ErrorBody;
use locksmith_core::{Acquire, AcquireError, FenceToken, LeaseId, ResourceView, Trusted};
use locksmith_store::StoreError;
use serde::Serialize;

use super::{
    ErrorKind, MAX_ID_LEN, RESOURCE_PREFIX, SlotsSource, owner_of, resource_of, validate_group,
    validate_slots,
};
use crate::app::App;
use crate::engine::{Denied, EngineError};
use crate::request::ApiError;

/// How many groups one pass over the table's names brings back (see [`groups`]).
const GROUPS_PAGE: usize = 1_000;

/// A FleetLock error reply: `{"kind","value"}` with a 4xx/5xx status.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: StatusCode,
    /// The protocol's error kind.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub value: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(status: StatusCode, kind: ErrorKind, value: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            value: value.into(),
        }
    }

    /// A 400 `invalid_request`.
    pub fn invalid(value: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, value)
    }

    /// The body the protocol sends.
    pub fn body(&self) -> RefusalBody<'_> {
        RefusalBody {
            kind: self.kind,
            value: &self.value,
        }
    }
}

/// The body of a FleetLock error reply.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = FleetLockError)]
pub struct RefusalBody<'a> {
    /// What kind of error: one of a small fixed set.
    pub kind: ErrorKind,
    /// What happened, for people.
    pub value: &'a str,
}

/// A FleetLock client's request, checked: `client_params` of the protocol's body.
#[derive(Debug)]
pub struct SlotRequest {
    /// The client's id (Zincati: the machine's app-specific id).
    pub id: String,
    /// Its reboot group.
    pub group: String,
}

impl SlotRequest {
    /// A request for `id` in `group`, if both are acceptable.
    pub fn new(id: String, group: String) -> Result<Self, Refusal> {
        if id.trim().is_empty() {
            return Err(Refusal::invalid("client_params.id must not be empty"));
        }
        if id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
            return Err(Refusal::invalid(format!(
                "client_params.id must be at most {MAX_ID_LEN} bytes with no control characters"
            )));
        }
        validate_group(&group).map_err(|e| Refusal::invalid(format!("client_params.group {e}")))?;
        Ok(Self { id, group })
    }
}

/// Reply to a granted pre-reboot (Zincati looks only at the status; this is for people).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LockReply {
    /// The client id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// The group's semaphore.
    pub resource: String,
    /// The group's size when it decided.
    pub slots: u32,
    /// The slot's lease.
    #[schema(value_type = u64)]
    pub lease: LeaseId,
    /// Its fencing token.
    #[schema(value_type = u64)]
    pub token: FenceToken,
    /// True when the id already held the slot (the lock is recursive).
    pub reacquired: bool,
}

/// Reply to a steady-state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnlockReply {
    /// The client id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// The group's semaphore.
    pub resource: String,
    /// True when the id held a slot and gave it back; false when it held none.
    pub released: bool,
}

/// What a storage failure means for a FleetLock request that wanted `what`: only a request
/// whose own commit failed has an unknown outcome; either way the server refuses writes until
/// it is restarted, so trying again before that cannot help.
fn storage_failed(e: &StoreError, what: &str, unknown: &str) -> String {
    match e {
        StoreError::Unknown(_) => format!(
            "the server could not finish recording {what} ({e}); {unknown} is unknown until the \
             server restarts, and it refuses writes until then"
        ),
        StoreError::Closed => format!(
            "the server is stopping and did not record {what}; retry against a running server"
        ),
        _ => format!(
            "the server cannot record {what} ({e}): its storage has failed, and it refuses \
             writes until it is restarted"
        ),
    }
}

/// Pre-reboot: takes a slot in the group (or gives back the one the id already holds).
pub async fn lock(app: &App, req: SlotRequest) -> Result<LockReply, Refusal> {
    let SlotRequest { id, group } = req;
    let fleetlock = &app.settings.fleetlock;
    let resource = resource_of(&group);
    let (slots, _) = fleetlock.slots(&group);
    let acquire = Acquire {
        resource: resource.clone(),
        owner: owner_of(&id, &group),
        ttl_ms: fleetlock.ttl_ms(),
        slots,
        wait_ms: 0,
        lock_delay_ms: 0,
        trusted: Trusted {
            resize: true,
            long_ttl: true,
            synthetic_owner: true,
        },
    };
    let unavailable = |value: String| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::FailedLock,
            value,
        )
    };
    match app.engine.acquire(acquire).await {
        Ok(lease) => {
            if !lease.reacquired {
                tracing::info!(%id, %group, lease = %lease.lease, "FleetLock reboot slot granted");
            }
            Ok(LockReply {
                id,
                group,
                resource,
                slots,
                lease: lease.lease,
                token: lease.token,
                reacquired: lease.reacquired,
            })
        }
        Err(EngineError::Refused(Denied::Refused(e))) => Err(lock_refusal(&group, slots, e)),
        // The protocol acts for nobody (`app.engine` has no actor): nothing to forbid.
        Err(EngineError::Refused(Denied::Forbidden(why))) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::InternalError,
            format!("an anonymous FleetLock request was refused as forbidden (a bug): {why}"),
        )),
        Err(EngineError::Storage(e)) => Err(unavailable(storage_failed(
            &e,
            "the slot",
            "whether it was granted",
        ))),
        Err(EngineError::ShuttingDown) => Err(unavailable(
            "the server is shutting down; no slot was granted".to_string(),
        )),
    }
}

fn lock_refusal(group: &str, slots: u32, e: AcquireError) -> Refusal {
    match e {
        AcquireError::Hot { holders, .. } => {
            let ids: Vec<&str> = holders.iter().map(|h| h.owner.node.as_str()).collect();
            Refusal::new(
                StatusCode::CONFLICT,
                ErrorKind::FailedLockSemaphoreFull,
                format!(
                    "group {group}: all {slots} reboot slot(s) are taken (held by {}); \
                     try again later",
                    ids.join(", ")
                ),
            )
        }
        AcquireError::Frozen { holds, .. } => {
            let why: Vec<String> = holds
                .iter()
                .map(|h| format!("{} (by {})", h.record.reason, h.record.by))
                .collect();
            Refusal::new(
                StatusCode::CONFLICT,
                ErrorKind::FailedLockFrozen,
                format!("group {group} is frozen by an operator: {}", why.join("; ")),
            )
        }
        AcquireError::LockDelay { left_ms, .. } => Refusal::new(
            StatusCode::CONFLICT,
            ErrorKind::FailedLockFrozen,
            format!(
                "group {group} is closed for {} s after a holder failed (lock-delay)",
                left_ms.div_ceil(1000)
            ),
        ),
        AcquireError::Invalid(e) => Refusal::invalid(e.to_string()),
        // A trusted acquire resizes instead of refusing, and its long TTL is the server's
        // setting (a re-acquire keeps its lease); reaching either is a bug.
        e @ (AcquireError::SlotsMismatch { .. } | AcquireError::TtlMismatch { .. }) => {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::InternalError,
                format!("internal error (a bug): {e}"),
            )
        }
        // Says "internal error (a bug)" itself.
        AcquireError::Internal(bug) => Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::InternalError,
            bug.to_string(),
        ),
    }
}

/// Steady-state: gives back the id's slot in the group, if it holds one.
pub async fn unlock(app: &App, req: SlotRequest) -> Result<UnlockReply, Refusal> {
    let SlotRequest { id, group } = req;
    let resource = resource_of(&group);
    let me = owner_of(&id, &group);
    let unavailable = |value: String| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::FailedUnlock,
            value,
        )
    };
    let failed = |e: &StoreError| {
        unavailable(match e {
            StoreError::Unknown(_) | StoreError::Failed(_) => {
                storage_failed(e, "the release", "whether the slot is still held")
            }
            _ => format!(
                "the server cannot read the group's slots ({e}); the slot may still be held — try again"
            ),
        })
    };
    // Only this id's own slot: no other holder (FleetLock or not) is ever touched.
    let mine: Vec<_> = app
        .engine
        .resource(&resource)
        .await
        .map_err(|e| failed(&e))?
        .holders
        .into_iter()
        .filter(|h| h.owner.same_process(&me))
        .map(|h| (h.lease, h.token))
        .collect();
    let mut released = false;
    for (lease, token) in &mine {
        match app.engine.release(*lease, Some(*token)).await {
            Ok(r) => released |= !r.already,
            // Ended meanwhile (broken, expired, or released by a concurrent steady-state): not
            // held any more, which is what the client asks for.
            Err(EngineError::Refused(_)) => {}
            Err(EngineError::Storage(e)) => return Err(failed(&e)),
            Err(EngineError::ShuttingDown) => {
                return Err(unavailable(
                    "the server is shutting down; the slot may still be held — try again"
                        .to_string(),
                ));
            }
        }
    }
    if mine.is_empty() {
        // Not held in the table — but an end seen there may not be durable yet (a concurrent
        // release still committing). Answer only after every earlier batch is durable, so that
        // a crash cannot bring back a slot we said was free. An audit query is ordered after
        // every batch submitted before it; with limit 0 it reads nothing.
        let barrier = locksmith_store::AuditQuery {
            limit: 0,
            ..locksmith_store::AuditQuery::default()
        };
        app.engine.audit(barrier).await.map_err(|e| failed(&e))?;
    }
    if released {
        tracing::info!(%id, %group, "FleetLock reboot slot released");
    }
    Ok(UnlockReply {
        id,
        group,
        resource,
        released,
    })
}

/// One group as operators see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupView {
    /// The group.
    pub group: String,
    /// Its semaphore.
    pub resource: String,
    /// The size in force: every pre-reboot decides with it.
    pub slots: u32,
    /// Where the size comes from.
    pub source: SlotsSource,
    /// Who holds a slot now (client ids: the owners' node names), oldest first.
    pub holders: Vec<String>,
}

/// `GET /v1/fleetlock/groups`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GroupsView {
    /// The protocol endpoints' URL prefix (`base_url` for Zincati is this plus a `/`).
    pub prefix: String,
    /// Size of groups with none of their own.
    pub default_slots: u32,
    /// TTL of a slot, ms; absent when slots never expire.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stale_after_ms: Option<u64>,
    /// Every group with a size of its own or a holder, by name.
    pub groups: Vec<GroupView>,
}

/// A group's view, from its semaphore's view (`None`: nobody holds or awaits it).
fn group_view(app: &App, group: String, semaphore: Option<&ResourceView>) -> GroupView {
    let (slots, source) = app.settings.fleetlock.slots(&group);
    GroupView {
        resource: resource_of(&group),
        group,
        slots,
        source,
        holders: semaphore
            .map(|r| r.holders.iter().map(|h| h.owner.node.clone()).collect())
            .unwrap_or_default(),
    }
}

/// Every group with a size of its own or a holder. The semaphores are read a page at a time
/// from the table's `reboot/` names ([`GROUPS_PAGE`] per pass over the names), so the listing
/// builds the views of the groups only — never of every lock in the table, which at a million
/// leases held the table for seconds, and every other request with it.
pub async fn groups(app: &App) -> Result<GroupsView, ApiError> {
    let fleetlock = &app.settings.fleetlock;
    let mut semaphores: BTreeMap<String, ResourceView> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = app
            .engine
            .resources_page(RESOURCE_PREFIX, after.as_deref(), GROUPS_PAGE, None)
            .await?;
        after = page.last().map(|r| r.resource.clone());
        for view in page {
            let group = view.resource.strip_prefix(RESOURCE_PREFIX);
            if let Some(group) = group.filter(|g| validate_group(g).is_ok()) {
                semaphores.insert(group.to_string(), view);
            }
        }
        if !more || after.is_none() {
            break;
        }
    }
    let names: BTreeSet<String> = fleetlock
        .configured()
        .into_iter()
        .chain(semaphores.keys().cloned())
        .collect();
    let groups = names
        .into_iter()
        .map(|group| {
            let semaphore = semaphores.get(&group);
            group_view(app, group.clone(), semaphore)
        })
        .collect();
    Ok(GroupsView {
        prefix: fleetlock.prefix().to_string(),
        default_slots: fleetlock.default_slots(),
        stale_after_ms: fleetlock.stale_after_ms(),
        groups,
    })
}

/// `invalid_request` naming `group` unless it is a group's name.
pub(crate) fn checked_group(group: &str) -> Result<(), ApiError> {
    validate_group(group).map_err(|e| ApiError::from(ErrorBody::invalid("group", e)))
}

/// One group.
pub async fn group(app: &App, group: &str) -> Result<GroupView, ApiError> {
    checked_group(group)?;
    let semaphore = app.engine.resource(&resource_of(group)).await?;
    Ok(group_view(app, group.to_string(), Some(&semaphore)))
}

/// Sets a group's size from now on, and resizes its semaphore at once.
pub async fn set_slots(
    app: &App,
    who: &locksmith_auth::Principal,
    group: &str,
    slots: u32,
) -> Result<GroupView, ApiError> {
    checked_group(group)?;
    validate_slots(slots).map_err(|e| ApiError::from(ErrorBody::invalid("slots", e)))?;
    let fleetlock = &app.settings.fleetlock;
    let (before, _) = fleetlock.slots(group);
    fleetlock.set_slots(group, slots);
    // Take effect now, not at the group's next pre-reboot: a grown group admits its queue at
    // once, and listings show the new size (airlock #81 was a size change that never applied).
    let resource = resource_of(group);
    app.engine_for(who).resize(&resource, slots).await?;
    tracing::info!(%group, before, slots, by = %who.name, "FleetLock group size changed");
    self::group(app, group).await
}
