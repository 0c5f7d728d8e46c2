//! Operators: holds (a bounded freeze, optionally acknowledged by a second operator), breaking
//! a lock, and the audit trail — as a query and as a live event stream.

mod events;
pub mod ops;
pub(crate) mod routes;
