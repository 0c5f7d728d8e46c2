//! The server's own reports: `/healthz`, `/v1/status`, `/metrics`, and the API's description
//! (`/v1/openapi.json`).
//!
//! A domain of its own rather than part of the operators': these describe the server across
//! every domain (storage, its heartbeat, the census of every kind of record), each future
//! domain adds its problems and gauges here, and they are read by machines — load balancers,
//! Prometheus, code generators — which issue 17 will let in with a permission of their own.

pub mod ops;
pub(crate) mod routes;
