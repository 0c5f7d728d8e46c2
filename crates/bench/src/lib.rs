//! # locksmith-bench
//!
//! Load generator for Locksmith, used by `locksmith-bench`, by the side-by-side comparison
//! with etcd and Redis (`compare`, whose peer clients are in [`peers`]), and by the scale
//! benchmark (`scale`, in [`scale`]: a million held leases, ten thousand heartbeating agents,
//! against the real server binary run by [`server_process`] and watched through [`procfs`]), and
//! by `fanout` (etcd and ZooKeeper watch fan-out; the ZooKeeper server it runs is [`zookeeper`]).
//! Workloads:
//!
//! - **cycles**: C clients, each acquiring and releasing its own resource as fast as it can —
//!   every grant and release is durable before its reply, so this measures the write path.
//! - **handoff**: C clients contending for one resource with `wait`; each release hands the lock
//!   to the next queued waiter. Measures handoffs/s, the wait each acquirer saw, and fairness.
//! - **renew**: C clients renewing their own leases (heartbeats; not persisted).
//!
//! Every workload checks mutual exclusion with a fenced counter and reports violations (the
//! expected number is zero). What it is not: a correctness test suite — the tests are that.

pub mod agent_fleet;
pub mod configs;
pub mod fanout;
pub mod peers;
pub mod procfs;
mod run;
pub mod scale;
pub mod server_process;
pub mod stats;
pub mod workload;
pub mod zookeeper;

pub use stats::Row;

/// The same allocator as the `locksmith` binary, so that the in-process server the benchmarks
/// start behaves like the real one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
pub use workload::{Target, cycles, fence_checks, handoff, renewals};
