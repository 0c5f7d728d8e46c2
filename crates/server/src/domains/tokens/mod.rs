//! API tokens: made, listed and revoked by administrators. A token's secret is shown once, in
//! the answer that makes it; the server keeps only its hash (see `locksmith_auth`). The first
//! start with authentication on makes an `admin` token and writes its secret to
//! `DATA/admin.token` ([`bootstrap`]).

pub mod bootstrap;
pub mod ops;
pub(crate) mod routes;
