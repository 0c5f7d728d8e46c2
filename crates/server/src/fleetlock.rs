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

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_core::{
    Acquire, AcquireError, NO_EXPIRY_TTL_MS, Owner, TableConfig, Trusted, validate_resource,
};
use locksmith_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::engine::EngineError;
use crate::http::{ApiError, AppState};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

impl Default for FleetLock {
    fn default() -> Self {
        Self::new(FleetLockConfig::default())
    }
}

impl FleetLock {
    /// The runtime state for `config`. Invalid settings (which the CLI refuses before this)
    /// fall back to their defaults, with an error in the log, rather than fail the server.
    pub fn new(config: FleetLockConfig) -> Self {
        let prefix = normalize_prefix(&config.prefix).unwrap_or_else(|e| {
            tracing::error!(error = %e, "invalid FleetLock prefix; using {DEFAULT_PREFIX}");
            DEFAULT_PREFIX.to_string()
        });
        let default_slots = if validate_slots(config.default_slots).is_ok() {
            config.default_slots
        } else {
            tracing::error!(
                slots = config.default_slots,
                "invalid FleetLock default slots; using 1"
            );
            1
        };
        let groups = config
            .group_slots
            .into_iter()
            .filter(|(group, slots)| {
                let ok = validate_group(group).is_ok() && validate_slots(*slots).is_ok();
                if !ok {
                    tracing::error!(%group, slots, "invalid FleetLock group size; ignored");
                }
                ok
            })
            .map(|(group, slots)| (group, (slots, SlotsSource::Flag)))
            .collect();
        let stale_after = config.stale_after.filter(|d| {
            let ms = d.as_millis();
            let ok = ms >= u128::from(TableConfig::default().min_ttl_ms)
                && ms <= u128::from(NO_EXPIRY_TTL_MS);
            if !ok {
                tracing::error!(?d, "invalid FleetLock stale-after; slots will not expire");
            }
            ok
        });
        Self {
            prefix,
            default_slots,
            stale_after,
            groups: Arc::new(RwLock::new(groups)),
        }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// A FleetLock error reply: `{"kind","value"}` with a 4xx/5xx status.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    kind: ErrorKind,
    value: String,
}

impl Refusal {
    fn new(status: StatusCode, kind: ErrorKind, value: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            value: value.into(),
        }
    }

    fn invalid(value: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidRequest, value)
    }
}

#[derive(Serialize)]
struct RefusalBody<'a> {
    kind: &'a str,
    value: &'a str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = RefusalBody {
            kind: self.kind.as_str(),
            value: &self.value,
        };
        (self.status, Json(body)).into_response()
    }
}

// ---- the protocol endpoints --------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct ProtocolRequest {
    client_params: ClientParams,
}

#[derive(Debug, Deserialize)]
struct ClientParams {
    id: String,
    group: String,
}

/// A checked request: the header was there, the body well-formed.
#[derive(Debug)]
struct Client {
    id: String,
    group: String,
}

fn parse(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Client, Refusal> {
    let header = headers
        .get(PROTOCOL_HEADER)
        .map(|v| v.to_str().map(str::trim).unwrap_or_default());
    match header {
        Some(v) if v.eq_ignore_ascii_case("true") => {}
        Some(v) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::ProtocolError,
                format!("header `{PROTOCOL_HEADER}` must be `true` (got {v:?})"),
            ));
        }
        None => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                ErrorKind::ProtocolError,
                format!("missing header `{PROTOCOL_HEADER}: true`"),
            ));
        }
    }
    let body = body.map_err(|e| {
        let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
        if too_large {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::InvalidRequest,
                format!(
                    "request body is larger than {} bytes",
                    crate::http::MAX_BODY_BYTES
                ),
            )
        } else {
            Refusal::invalid(format!("cannot read the request body: {e}"))
        }
    })?;
    let req: ProtocolRequest = serde_json::from_slice(&body).map_err(|e| {
        Refusal::invalid(format!(
            "body must be {{\"client_params\":{{\"id\":\"…\",\"group\":\"…\"}}}}: {e}"
        ))
    })?;
    let ClientParams { id, group } = req.client_params;
    if id.trim().is_empty() {
        return Err(Refusal::invalid("client_params.id must not be empty"));
    }
    if id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(Refusal::invalid(format!(
            "client_params.id must be at most {MAX_ID_LEN} bytes with no control characters"
        )));
    }
    validate_group(&group).map_err(|e| Refusal::invalid(format!("client_params.group {e}")))?;
    Ok(Client { id, group })
}

/// Reply to a granted pre-reboot (Zincati looks only at the status; this is for people).
#[derive(Debug, Serialize)]
struct LockReply {
    id: String,
    group: String,
    resource: String,
    slots: u32,
    lease: locksmith_core::LeaseId,
    token: locksmith_core::FenceToken,
    /// True when the id already held the slot (the lock is recursive).
    reacquired: bool,
}

/// Reply to a steady-state.
#[derive(Debug, Serialize)]
struct UnlockReply {
    id: String,
    group: String,
    resource: String,
    /// True when the id held a slot and gave it back; false when it held none.
    released: bool,
}

async fn pre_reboot(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match lock(&app, &headers, body).await {
        Ok(reply) => (StatusCode::OK, Json(reply)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn lock(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<LockReply, Refusal> {
    let Client { id, group } = parse(headers, body)?;
    let resource = resource_of(&group);
    let (slots, _) = app.fleetlock.slots(&group);
    let acquire = Acquire {
        resource: resource.clone(),
        owner: owner_of(&id, &group),
        ttl_ms: app.fleetlock.ttl_ms(),
        slots,
        wait_ms: 0,
        lock_delay_ms: 0,
        trusted: Trusted {
            resize: true,
            long_ttl: true,
            synthetic_owner: true,
        },
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
        Err(EngineError::Refused(e)) => Err(lock_refusal(&group, slots, e)),
        Err(EngineError::Storage(e @ StoreError::Unknown(_))) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::FailedLock,
            format!(
                "the server could not finish recording the slot ({e}); whether it was granted \
                 is unknown until the server restarts"
            ),
        )),
        Err(EngineError::Storage(e)) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::FailedLock,
            format!("the server cannot record the slot ({e}); nothing was granted"),
        )),
        Err(EngineError::ShuttingDown) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::FailedLock,
            "the server is shutting down; nothing was granted",
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

async fn steady_state(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match unlock(&app, &headers, body).await {
        Ok(reply) => (StatusCode::OK, Json(reply)).into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

async fn unlock(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<UnlockReply, Refusal> {
    let Client { id, group } = parse(headers, body)?;
    let resource = resource_of(&group);
    let me = owner_of(&id, &group);
    let unavailable = |why: String| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::FailedUnlock,
            format!("{why}; the slot may still be held — try again"),
        )
    };
    // Only this id's own slot: no other holder (FleetLock or not) is ever touched.
    let mine: Vec<_> = app
        .engine
        .resource(&resource)
        .await
        .map_err(|e| unavailable(format!("the server cannot read the group's slots ({e})")))?
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
            Err(EngineError::Storage(e)) => {
                return Err(unavailable(format!(
                    "the server cannot record the release ({e})"
                )));
            }
            Err(EngineError::ShuttingDown) => {
                return Err(unavailable("the server is shutting down".to_string()));
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
        if let Err(e) = app.engine.audit(barrier).await {
            return Err(unavailable(format!("the server's storage failed ({e})")));
        }
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

/// Any method but POST on a protocol endpoint.
async fn method_not_allowed(method: axum::http::Method) -> Refusal {
    Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::ProtocolError,
        format!("{method} is not allowed; FleetLock requests are POSTs"),
    )
}

// ---- the operator endpoints --------------------------------------------------------------------

/// One group as operators see it.
#[derive(Debug, Serialize)]
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
#[derive(Debug, Serialize)]
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

/// `PUT /v1/fleetlock/groups/{group}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSlots {
    slots: u32,
}

async fn group_view(app: &AppState, group: &str) -> Result<GroupView, ApiError> {
    let resource = resource_of(group);
    let (slots, source) = app.fleetlock.slots(group);
    let holders = app
        .engine
        .resource(&resource)
        .await?
        .holders
        .into_iter()
        .map(|h| h.owner.node)
        .collect();
    Ok(GroupView {
        group: group.to_string(),
        resource,
        slots,
        source,
        holders,
    })
}

async fn list_groups(State(app): State<AppState>) -> Result<Json<GroupsView>, ApiError> {
    let mut names: Vec<String> = app.fleetlock.configured();
    names.extend(app.engine.resources().await?.into_iter().filter_map(|r| {
        r.resource
            .strip_prefix(RESOURCE_PREFIX)
            .filter(|g| validate_group(g).is_ok())
            .map(str::to_string)
    }));
    names.sort();
    names.dedup();
    let mut groups = Vec::with_capacity(names.len());
    for group in &names {
        groups.push(group_view(&app, group).await?);
    }
    Ok(Json(GroupsView {
        prefix: app.fleetlock.prefix().to_string(),
        default_slots: app.fleetlock.default_slots,
        stale_after_ms: app.fleetlock.stale_after.map(|_| app.fleetlock.ttl_ms()),
        groups,
    }))
}

fn checked_group(group: &str) -> Result<(), ApiError> {
    validate_group(group).map_err(|e| ApiError::from(ErrorBody::invalid("group", e)))
}

async fn get_group(
    State(app): State<AppState>,
    Path(group): Path<String>,
) -> Result<Json<GroupView>, ApiError> {
    checked_group(&group)?;
    Ok(Json(group_view(&app, &group).await?))
}

async fn put_group(
    State(app): State<AppState>,
    Path(group): Path<String>,
    body: Bytes,
) -> Result<Json<GroupView>, ApiError> {
    checked_group(&group)?;
    let SetSlots { slots } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::from(ErrorBody::new(
            ErrorCode::InvalidJson,
            format!("body must be {{\"slots\": N}}: {e}"),
        ))
    })?;
    validate_slots(slots).map_err(|e| ApiError::from(ErrorBody::invalid("slots", e)))?;
    let (before, _) = app.fleetlock.slots(&group);
    app.fleetlock.set_slots(&group, slots);
    // Take effect now, not at the group's next pre-reboot: a grown group admits its queue at
    // once, and listings show the new size (airlock #81 was a size change that never applied).
    let resource = format!("{RESOURCE_PREFIX}{group}");
    app.engine.resize(&resource, slots).await?;
    tracing::info!(%group, before, slots, "FleetLock group size changed");
    Ok(Json(group_view(&app, &group).await?))
}

/// The FleetLock routes: the protocol endpoints under the configured prefix, and the operator
/// endpoints under `/v1/fleetlock`. Merge it into the main router before its fallbacks.
pub fn router(fleetlock: &FleetLock) -> Router<AppState> {
    let prefix = fleetlock.prefix();
    let protocol = |handler: MethodRouter<AppState>| handler.fallback(method_not_allowed);
    Router::new()
        .route(
            &format!("{prefix}/v1/pre-reboot"),
            protocol(post(pre_reboot)),
        )
        .route(
            &format!("{prefix}/v1/steady-state"),
            protocol(post(steady_state)),
        )
        .route("/v1/fleetlock/groups", get(list_groups))
        .route(
            "/v1/fleetlock/groups/{group}",
            get(get_group).put(put_group),
        )
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

    #[test]
    fn a_runtime_size_overrides_flags_and_default() {
        let mut groups = BTreeMap::new();
        groups.insert("workers".to_string(), 3);
        let fl = FleetLock::new(FleetLockConfig {
            default_slots: 2,
            group_slots: groups,
            ..FleetLockConfig::default()
        });
        assert_eq!(fl.slots("other"), (2, SlotsSource::Default));
        assert_eq!(fl.slots("workers"), (3, SlotsSource::Flag));
        let clone = fl.clone();
        clone.set_slots("workers", 1);
        assert_eq!(fl.slots("workers"), (1, SlotsSource::Runtime));
        assert_eq!(fl.ttl_ms(), NO_EXPIRY_TTL_MS);
    }
}
