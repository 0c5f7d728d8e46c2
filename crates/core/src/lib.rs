//! # locksmith-core
//!
//! The sans-IO heart of Locksmith: a lock table of leases, owners, fencing tokens, FIFO wait
//! queues and N-slot semaphores. It never touches a socket, a file or a clock: every operation
//! takes `now` and returns its outcome plus [`Effect`]s (mutations to persist, waiters to wake,
//! leases that ended) for a driver to carry out — the shape of `quinn-proto`.
//!
//! What it is not: a server, a store or a client. `locksmith-store` persists the mutations,
//! `locksmith-server` drives the table from HTTP requests and a reaper task.

pub mod audit;
pub mod effect;
pub mod error;
pub mod hold;
pub mod ids;
pub mod keyspace;
pub mod operator;
pub mod owner;
pub mod record;
pub mod resource;
pub mod table;
pub mod time;
pub mod view;

pub use audit::{AuditKind, AuditPrincipal, AuditRecord, DomainEvent};
pub use effect::{Effect, Effects};
pub use error::{
    AcquireError, BreakError, BrokenInvariant, EndCause, FenceError, HoldError, InvalidRequest,
    LeaseError, ReportError, WriterError,
};
pub use hold::{HoldId, HoldRecord, HoldState, HoldView};
pub use ids::{FenceToken, LeaseId, WaiterId};
pub use keyspace::{validate_record_key, validate_record_value, validate_space};
pub use operator::same_operator;
pub use owner::Owner;
pub use record::{LeaseChunk, LeaseRecord, LeaseRef, Mutation, OwnerRef, Snapshot};
pub use resource::validate_resource;
pub use table::{
    Acquire, AcquireOutcome, BreakOutcome, Census, DeadProcess, LeasePreparer, LivenessReport,
    LockTable, NO_EXPIRY_TTL_MS, PlaceHold, PreparedLeases, Reclaimed, Released, RestoreBuilder,
    TableConfig, Trusted, Vantage, validate_reporter,
};
pub use time::{Mono, Now};
pub use view::{HolderView, LeaseView, LockState, ResourceView, WaiterView};
