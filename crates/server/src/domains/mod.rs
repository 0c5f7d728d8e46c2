//! The server's domains, one module each: its request functions (`ops`, transport-neutral:
//! typed request in, typed answer or [`ApiError`](crate::request::ApiError) out) and its HTTP
//! routes (`routes`, handlers that only extract and call `ops`). The wire protocol calls the
//! same `ops`.
//!
//! A new domain (configs, agents, rollouts) adds a directory here and one line to [`routes`].

pub mod agents;
pub mod configs;
pub mod fleetlock;
pub mod leases;
pub mod operators;
pub mod rollouts;
pub mod server;
pub mod tokens;

use crate::app::Settings;
use crate::routing::Route;

/// Every HTTP route of every domain: the route table the router and the OpenAPI document are
/// both built from.
pub(crate) fn routes(settings: &Settings) -> Vec<Route> {
    let mut routes = Vec::new();
    routes.extend(leases::routes::routes());
    routes.extend(operators::routes::routes());
    routes.extend(fleetlock::routes::routes(&settings.fleetlock));
    routes.extend(server::routes::routes(settings));
    routes.extend(tokens::routes::routes());
    routes.extend(configs::routes::routes(settings));
    routes.extend(agents::routes::routes(settings));
    routes.extend(rollouts::routes::routes());
    routes
}
