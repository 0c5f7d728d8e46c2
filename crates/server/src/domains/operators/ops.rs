//! The operators' request functions.

use locksmith_api::{
    AuditQuery, AuditResponse, BreakRequest, BreakResponse, DEFAULT_BREAK_FREEZE_MS, HoldRequest,
    HoldsResponse,
};
use locksmith_auth::Principal;
use locksmith_core::{HoldId, HoldView, PlaceHold, validate_resource};

use crate::app::App;
use crate::request::{ApiError, page_limit, valid_id};

/// Default and largest page of audit records.
const AUDIT_DEFAULT_LIMIT: usize = 100;
const AUDIT_MAX_LIMIT: usize = 10_000;

/// Places a hold: no new grants on the resource while it is in force. Placed by `who`'s name
/// (see `App::operator_name`).
pub async fn place_hold(
    app: &App,
    who: &Principal,
    req: HoldRequest,
) -> Result<HoldView, ApiError> {
    let hold = PlaceHold {
        operator: app.operator_name(who, &req.operator),
        resource: req.resource,
        reason: req.reason,
        duration_ms: req.duration_ms,
        require_ack: req.require_ack,
    };
    Ok(app.engine_for(who).place_hold(hold).await?)
}

/// Every hold, active or pending acknowledgement.
pub async fn holds(app: &App) -> Result<HoldsResponse, ApiError> {
    Ok(HoldsResponse {
        holds: app.engine.holds().await?,
    })
}

/// A second operator acknowledges a hold: it takes effect. `operator` counts only with
/// `--auth off` (see `App::operator_name`).
pub async fn ack_hold(
    app: &App,
    who: &Principal,
    hold: HoldId,
    operator: &str,
) -> Result<HoldView, ApiError> {
    let operator = app.operator_name(who, operator);
    Ok(app
        .engine_for(who)
        .ack_hold(valid_hold(hold)?, &operator)
        .await?)
}

/// Lifts a hold early. `operator` counts only with `--auth off`.
pub async fn lift_hold(
    app: &App,
    who: &Principal,
    hold: HoldId,
    operator: &str,
) -> Result<HoldView, ApiError> {
    let operator = app.operator_name(who, operator);
    Ok(app
        .engine_for(who)
        .lift_hold(valid_hold(hold)?, &operator)
        .await?)
}

/// Breaks a lock: revokes its leases (or one), advances the fence past their tokens, and
/// freezes the resource for a while so nothing re-grabs it mid-operation.
pub async fn break_lock(
    app: &App,
    who: &Principal,
    req: BreakRequest,
) -> Result<BreakResponse, ApiError> {
    let freeze = req.freeze_ms.unwrap_or(DEFAULT_BREAK_FREEZE_MS);
    let operator = app.operator_name(who, &req.operator);
    let out = app
        .engine_for(who)
        .break_lock(&req.resource, req.lease, &operator, &req.reason, freeze)
        .await?;
    Ok(BreakResponse {
        resource: req.resource,
        revoked: out.revoked,
        fence: out.fence,
        hold: out.hold,
    })
}

/// The audit records that match, oldest first.
pub async fn audit(app: &App, q: AuditQuery) -> Result<AuditResponse, ApiError> {
    if let Some(r) = &q.resource {
        validate_resource(r)?;
    }
    let limit = page_limit(q.limit, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT)?;
    let records = app
        .engine
        .audit(locksmith_store::AuditQuery {
            resource: q.resource,
            since_ms: q.since_ms,
            after_seq: q.after_seq,
            limit,
        })
        .await?;
    Ok(AuditResponse { records })
}

/// `hold` if it can name a hold (ids start at 1).
fn valid_hold(hold: HoldId) -> Result<HoldId, ApiError> {
    valid_id("hold", hold.0).map(HoldId)
}
