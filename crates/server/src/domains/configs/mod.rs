//! Configs: versioned configs that only the holder of the lock `configs/NAME` writes,
//! validated before they land (`/v1/configs`). The revision store is `locksmith_config`'s
//! [`Configs`](locksmith_config::Configs), kept in the engine's state; a fenced change checks
//! the writer's lease in the same engine step as it appends (see `engine::configs`). This
//! module turns requests into those operations ([`ops`]), refusals into API errors
//! ([`errors`]), and serves them over HTTP ([`routes`]).

pub mod errors;
pub mod ops;
pub mod routes;
