//! The PID namespace this process runs in, and the check that `/proc` shows that very one.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::IdentityError;

const OWN_PID_NS: &str = "/proc/self/ns/pid";
const OWN_STATUS: &str = "/proc/self/status";

/// The PID namespace this process runs in, as `/proc/self/ns/pid` names it (`pid:[4026531836]`),
/// or `None` on a kernel without PID namespaces. Node name and boot id are shared by every PID
/// namespace of a machine, so this is what tells a host's pid 4121 from a container's.
///
/// It also checks that `/proc` shows this very namespace (the first `NSpid` of our own status
/// is our own pid only then): every pid this process reads in `/proc` — an owner's start time, a
/// holder's liveness — means what it says only if so.
pub fn pid_namespace() -> Result<Option<String>, IdentityError> {
    let status = fs::read_to_string(OWN_STATUS).map_err(|source| match source.kind() {
        // /proc/self does not resolve: this process is not in the namespace /proc shows.
        io::ErrorKind::NotFound => {
            IdentityError::ForeignProc(format!("{OWN_STATUS} does not exist"))
        }
        _ => IdentityError::Read {
            path: PathBuf::from(OWN_STATUS),
            source,
        },
    })?;
    check_own_proc(&status, std::process::id())?;
    match fs::read_link(OWN_PID_NS) {
        Ok(link) => {
            let name = link.to_string_lossy().into_owned();
            if name.is_empty() {
                return Err(IdentityError::Parse {
                    path: PathBuf::from(OWN_PID_NS),
                    reason: "it is empty".into(),
                });
            }
            Ok(Some(name))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Read {
            path: PathBuf::from(OWN_PID_NS),
            source,
        }),
    }
}

/// Checks a `/proc/self/status` text is that of process `me` as numbered in its own namespace:
/// `NSpid` lists its pid in every namespace from the one `/proc` belongs to down to its own, so
/// it has exactly one entry, `me`, when `/proc` is ours. (Kernels before 4.1 have no `NSpid`;
/// there the `Pid` line, numbered in `/proc`'s namespace, must be `me`.)
pub fn check_own_proc(status: &str, me: u32) -> Result<(), IdentityError> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
    };
    let seen = field("NSpid").or_else(|| field("Pid")).unwrap_or_default();
    if seen == [me.to_string()] {
        return Ok(());
    }
    Err(IdentityError::ForeignProc(format!(
        "this process is pid {me}, but {OWN_STATUS} numbers it {}",
        seen.join(" then ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_pid_namespace_is_named_and_proc_is_ours() {
        let ns = pid_namespace()
            .expect("readable")
            .expect("a kernel with PID namespaces");
        assert!(ns.starts_with("pid:[") && ns.ends_with(']'), "{ns}");
    }

    /// Issue 15 item 3: a process in a PID namespace without its own `/proc` would read other
    /// processes' entries under its pids.
    #[test]
    fn a_proc_of_another_namespace_is_refused() {
        let own = "Name:\tx\nPid:\t3\nNSpid:\t3\n";
        assert!(check_own_proc(own, 3).is_ok());
        // Seen from an outer namespace's /proc: pid 32372 there, 3 in its own.
        let outer = "Name:\tx\nPid:\t32372\nNSpid:\t32372\t3\n";
        let err = check_own_proc(outer, 3).expect_err("foreign /proc");
        assert!(matches!(err, IdentityError::ForeignProc(_)), "{err}");
        assert!(err.to_string().contains("32372 then 3"), "{err}");
        // Kernels without NSpid: the Pid line decides.
        assert!(check_own_proc("Pid:\t3\n", 3).is_ok());
        assert!(check_own_proc("Pid:\t9\n", 3).is_err());
    }

    #[test]
    fn another_pid_namespace_has_another_name() {
        let ours = pid_namespace().expect("readable").expect("namespaces");
        // Needs CAP_SYS_ADMIN (root here); elsewhere there is nothing to compare.
        let Ok(out) = std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "readlink", OWN_PID_NS])
            .output()
        else {
            return;
        };
        if !out.status.success() {
            eprintln!("skipped: unshare --pid is not permitted here");
            return;
        }
        let theirs = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(theirs.starts_with("pid:["), "{theirs}");
        assert_ne!(theirs, ours);
    }
}
