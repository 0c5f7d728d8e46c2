//! Endpoint agents: they register (node, labels, boot id, version, the configs they apply),
//! stay connected to a stream of desired revisions, report what they applied, and operators
//! list them as the fleet (`/v1/agents`, `/v1/fleet`) and send drafts to some of them as
//! shadows (`/v1/configs/{name}/shadow`).
//!
//! The state ([`model`]) is a field of the engine's state: registrations and last reports are
//! durable records changed in the step (see `engine::agents`); presence and shadows live in
//! memory. What a node should run is one function, [`model::desired`]. [`ops`] turns requests
//! into engine operations and checks node scoping, [`stream`] serves the desired stream, and
//! [`routes`] the HTTP routes.

pub mod errors;
pub mod model;
pub mod ops;
pub mod routes;
pub mod stream;
