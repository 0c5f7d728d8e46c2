//! CPU priority of the embedded store's background threads (the apply thread and the log
//! segment preparer).
//!
//! Their work is never on a request's path: a request waits for its log append and `fdatasync`
//! on the commit thread, and only then is the batch copied into redb. Under load, though, the
//! apply thread competes for the same cores as the threads that serve requests; run at normal
//! priority it took about a tenth of a 2-core machine in the 64-client benchmark, time the
//! requests then waited for. At the lowest priority it runs in the gaps (while requests wait for
//! their sync, the cores are partly idle) and the same benchmark does about 5 % more cycles per
//! second (`docs/journal/2026-12-03-where-the-time-goes.md`).
//!
//! It cannot fall behind without bound: the commit thread stops appending when the batches
//! waiting for the apply thread pass a bound (see `applier`), which idles the request threads
//! and gives the apply thread the cores.

/// The nice value of the background threads: the lowest priority of the normal scheduling
/// class. (Linux keeps a nice value per thread, so this changes no other thread.)
pub(super) const BACKGROUND_NICE: i32 = 19;

/// Lowers the calling thread's CPU priority to [`BACKGROUND_NICE`]. Lowering one's own
/// priority needs no privilege; if it fails anyway, the thread runs at normal priority, which
/// is only slower.
pub(super) fn run_in_background(thread: &str) {
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), BACKGROUND_NICE)
    {
        tracing::debug!(thread, %error, "cannot lower the thread's CPU priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = thread;
}
