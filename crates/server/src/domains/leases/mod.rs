//! Leases: acquire, renew, release and look at them; the listing of locks; fence checks; and
//! the liveness reports that end the leases of dead holders. The wire protocol carries the hot
//! ones (acquire, renew, release, fence check) through the same [`ops`].

pub mod ops;
pub(crate) mod routes;
