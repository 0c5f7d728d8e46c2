//! The server's reports, as request functions.

use locksmith_api::{HealthResponse, StatusResponse};

use crate::app::App;
use crate::metrics::{Snapshot, TableSnapshot, hold_counts};

/// Health and counters; never waits for storage.
pub fn health(app: &App) -> HealthResponse {
    app.engine.health()
}

/// The server's verdict on itself: ALL CLEAR, or each problem with its next step.
pub async fn status(app: &App) -> StatusResponse {
    let auth_off = app.settings.auth == crate::AuthMode::Off;
    crate::status::status(&app.engine, app.settings.gc_interval, auth_off).await
}

/// The Prometheus text exposition.
pub async fn metrics(app: &App) -> String {
    let engine = &app.engine;
    let health = engine.health();
    // Counts, not views: a scrape at a million locks must not build a million views. Only
    // once durable (a barrier), and never longer than a scrape can wait: on a stalled or
    // failed store the table's gauges keep their last values.
    let table = tokio::time::timeout(crate::status::TABLE_WAIT, engine.census())
        .await
        .ok()
        .and_then(Result::ok);
    engine.metrics().render(&Snapshot {
        table: table.as_ref().map(|(census, holds)| TableSnapshot {
            plain_hot: census.hot,
            resources: &census.notable,
            holds: hold_counts(holds),
        }),
        leases: health.leases,
        waiters: health.waiters,
        fence: health.fence_high_water,
        heartbeat_ms: engine.last_reap_ms(),
        agents_online: engine.agents_online() as u64,
    })
}
