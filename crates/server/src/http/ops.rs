//! Operator routes: holds, break, liveness reports, audit, status, metrics.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use locksmith_api::{
    AuditQuery, AuditResponse, BreakRequest, BreakResponse, DEFAULT_BREAK_FREEZE_MS, ErrorBody,
    HoldRequest, HoldsResponse, LivenessReport, LivenessResponse, OperatorRequest, StatusResponse,
};
use locksmith_core::{
    DeadProcess, HoldId, HoldView, PlaceHold, Vantage, validate_reporter, validate_resource,
};

use super::extract::{self, JsonBody};
use super::{ApiError, AppState};
use crate::engine::Engine;
use crate::metrics::{Snapshot, TableSnapshot, hold_counts};

type ApiResult<T> = Result<Json<T>, ApiError>;

/// Default and largest page of audit records.
const AUDIT_DEFAULT_LIMIT: usize = 100;
const AUDIT_MAX_LIMIT: usize = 10_000;

pub async fn place_hold(
    State(engine): State<Engine>,
    JsonBody(req): JsonBody<HoldRequest>,
) -> ApiResult<HoldView> {
    let hold = PlaceHold {
        resource: req.resource,
        operator: req.operator,
        reason: req.reason,
        duration_ms: req.duration_ms,
        require_ack: req.require_ack,
    };
    Ok(Json(engine.place_hold(hold).await?))
}

pub async fn holds(State(engine): State<Engine>) -> ApiResult<HoldsResponse> {
    Ok(Json(HoldsResponse {
        holds: engine.holds().await?,
    }))
}

fn parse_hold(id: &str) -> Result<HoldId, ApiError> {
    id.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(HoldId)
        .ok_or_else(|| {
            ApiError::from(ErrorBody::invalid(
                "hold",
                format!("{id:?} is not a hold id (a positive integer)"),
            ))
        })
}

pub async fn ack_hold(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<OperatorRequest>,
) -> ApiResult<HoldView> {
    let hold = parse_hold(&id)?;
    Ok(Json(engine.ack_hold(hold, &req.operator).await?))
}

pub async fn lift_hold(
    State(engine): State<Engine>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<OperatorRequest>,
) -> ApiResult<HoldView> {
    let hold = parse_hold(&id)?;
    Ok(Json(engine.lift_hold(hold, &req.operator).await?))
}

pub async fn break_lock(
    State(engine): State<Engine>,
    JsonBody(req): JsonBody<BreakRequest>,
) -> ApiResult<BreakResponse> {
    let freeze = req.freeze_ms.unwrap_or(DEFAULT_BREAK_FREEZE_MS);
    let out = engine
        .break_lock(&req.resource, req.lease, &req.operator, &req.reason, freeze)
        .await?;
    Ok(Json(BreakResponse {
        resource: req.resource,
        revoked: out.revoked,
        fence: out.fence,
        hold: out.hold,
    }))
}

/// A node's liveness report. Who sends it is checked before anything is taken from it: its boot
/// id alone reclaims the node's older-boot leases. About this server's own node the server
/// trusts its own eyes first (see `crate::own_node`).
pub async fn liveness(
    State(app): State<AppState>,
    JsonBody(req): JsonBody<LivenessReport>,
) -> ApiResult<LivenessResponse> {
    validate_reporter(&req.node, &req.boot_id, &req.reported_by)
        .map_err(|e| ApiError::from(ErrorBody::from_invalid(&e)))?;
    app.own.check_boot("boot_id", &req.node, &req.boot_id)?;
    let dead = req
        .dead
        .into_iter()
        .map(|d| DeadProcess {
            lease: d.lease,
            pid: d.pid,
            start_time: d.start_time,
        })
        .collect();
    let from = Vantage {
        node: &req.node,
        boot_id: &req.boot_id,
        pid_ns: req.pid_ns.as_deref(),
    };
    let (dead, alive) = app.own.vet_report(&app.engine, from, dead).await;
    let (reclaimed, refused) = app
        .engine
        .report_liveness(from, &req.reported_by, dead)
        .await?;
    Ok(Json(LivenessResponse {
        reclaimed,
        refused: alive
            .into_iter()
            .chain(refused.iter().map(ErrorBody::from_report))
            .collect(),
    }))
}

pub async fn audit(
    State(engine): State<Engine>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<AuditResponse> {
    let q = extract::query(query)?;
    if let Some(r) = &q.resource {
        validate_resource(r).map_err(|e| ApiError::from(ErrorBody::from_invalid(&e)))?;
    }
    let limit = extract::page_limit(q.limit, AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT)?;
    let records = engine
        .audit(locksmith_store::AuditQuery {
            resource: q.resource,
            since_ms: q.since_ms,
            after_seq: q.after_seq,
            limit,
        })
        .await?;
    Ok(Json(AuditResponse { records }))
}

pub async fn status(State(app): State<AppState>) -> Json<StatusResponse> {
    Json(crate::status::status(&app.engine, app.gc_interval).await)
}

pub async fn metrics(State(engine): State<Engine>) -> impl IntoResponse {
    let health = engine.health();
    // Counts, not views: a scrape at a million locks must not build a million views. Only
    // once durable (a barrier), and never longer than a scrape can wait: on a stalled or
    // failed store the table's gauges keep their last values.
    let table = tokio::time::timeout(crate::status::TABLE_WAIT, engine.census())
        .await
        .ok()
        .and_then(Result::ok);
    let body = engine.metrics().render(&Snapshot {
        table: table.as_ref().map(|(census, holds)| TableSnapshot {
            plain_hot: census.hot,
            resources: &census.notable,
            holds: hold_counts(holds),
        }),
        leases: health.leases,
        waiters: health.waiters,
        fence: health.fence_high_water,
        heartbeat_ms: engine.last_reap_ms(),
    });
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
