//! # locksmith-host
//!
//! What a node knows about itself and its processes, read from Linux `/proc`: its name, its boot
//! id (new on every reboot), the PID namespace pids are numbered in, a process's start time, and
//! whether a given process incarnation `(pid, start time)` is still alive. The CLI uses it to name a lock's owner; the server's probe
//! and `locksmith why` use it to prove a local holder dead.
//!
//! What it is not: portable. Everything here is Linux-only, and every failure is a typed error.

use std::fs;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const OWN_PID_NS: &str = "/proc/self/ns/pid";
const OWN_STATUS: &str = "/proc/self/status";

/// Why the owner identity could not be established.
#[derive(Debug, Error)]
pub enum IdentityError {
    /// No such process on this node.
    #[error("no process {pid} on this node")]
    NoSuchProcess {
        /// The pid looked up.
        pid: u32,
    },
    /// A `/proc` file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A `/proc` file did not look as expected.
    #[error("cannot parse {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The host name could not be read.
    #[error("cannot read this host's name: {0}")]
    Hostname(String),
    /// `/proc` is mounted from another PID namespace than this process's: every pid read there
    /// would name some other process (a PID namespace entered without its own `/proc`, e.g.
    /// `unshare --pid --fork` without `--mount-proc`).
    #[error("/proc shows another PID namespace than this process runs in: {0}")]
    ForeignProc(String),
}

impl IdentityError {
    /// The flag that fixes this error, for the error line's next step.
    pub fn next_step(&self) -> &'static str {
        match self {
            IdentityError::NoSuchProcess { .. } => {
                "pass --pid of a live process on this node that will hold the lock"
            }
            IdentityError::Hostname(_) => "pass --node NAME or set LOCKSMITH_NODE",
            IdentityError::Read { .. } | IdentityError::Parse { .. } => {
                "the CLI needs Linux /proc to name the lock owner"
            }
            IdentityError::ForeignProc(_) => {
                "mount this PID namespace's own /proc (e.g. unshare --pid --fork --mount-proc)"
            }
        }
    }
}

/// This host's name.
pub fn hostname() -> Result<String, IdentityError> {
    let name = nix::unistd::gethostname()
        .map_err(|e| IdentityError::Hostname(e.desc().to_string()))?
        .into_string()
        .map_err(|raw| IdentityError::Hostname(format!("{raw:?} is not UTF-8")))?;
    if name.trim().is_empty() {
        return Err(IdentityError::Hostname("it is empty".into()));
    }
    Ok(name)
}

/// Start time of process `pid`, in clock ticks since boot (`/proc/PID/stat` field 22).
pub fn process_start_time(pid: u32) -> Result<u64, IdentityError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = fs::read_to_string(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => IdentityError::NoSuchProcess { pid },
        _ => IdentityError::Read {
            path: path.clone(),
            source,
        },
    })?;
    parse_start_time(&stat).map_err(|reason| IdentityError::Parse { path, reason })
}

/// Field 22 (`starttime`) of a `/proc/PID/stat` line. Field 2 is the command name in
/// parentheses and may itself contain spaces and parentheses, so fields are counted from after
/// the LAST `)`: there, field 3 (`state`) is the first.
pub fn parse_start_time(stat: &str) -> Result<u64, String> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| "no ')' closing the command name".to_string())?;
    let field = rest
        .split_whitespace()
        .nth(22 - 3)
        .ok_or_else(|| "fewer than 22 fields".to_string())?;
    field
        .parse()
        .map_err(|e| format!("field 22 (start time) {field:?} is not a number: {e}"))
}

/// This node's boot id: it changes on every reboot.
pub fn boot_id() -> Result<String, IdentityError> {
    let path = PathBuf::from(BOOT_ID);
    let raw = fs::read_to_string(&path).map_err(|source| IdentityError::Read {
        path: path.clone(),
        source,
    })?;
    let id = raw.trim();
    if id.is_empty() {
        return Err(IdentityError::Parse {
            path,
            reason: "it is empty".into(),
        });
    }
    Ok(id.to_string())
}

/// The process a lock taken by a short-lived command should belong to, given the command's
/// parent: `parent` itself, unless it is a subshell whose output is being captured — then the
/// shell that forked it, and so on up.
///
/// `L=$(locksmith acquire R --json | jq .lease)` runs `locksmith` as a child of the subshell
/// bash forks for the command substitution; that subshell exits as soon as the pipeline does,
/// so a lock it owned would be reclaimed by the server's probe within a quarter second while the
/// script goes on working under it. A step up is taken only when both hold:
///
/// - `parent` is a fork of its own parent that never exec'd (a subshell: same command name,
///   same command line and the same stack start — exec would have given it a new stack), and
/// - its stdout is a pipe its parent does not share: it was made to carry this subshell's
///   output to someone else (`$(…)`, a pipeline stage), so the subshell lives only as long as
///   the command it wraps. A `( … ) &` subshell writes where its shell writes and may outlive
///   it: it keeps the lock.
///
/// Whatever cannot be read (another user's process, a process gone meanwhile) stops the walk:
/// the answer is then the last process known to qualify.
pub fn lasting_ancestor(parent: u32) -> u32 {
    let mut owner = parent;
    // Deeper nesting than this is not a shell script anyone writes; stop rather than loop.
    for _ in 0..32 {
        match captured_subshell_parent(owner) {
            Some(up) => owner = up,
            None => break,
        }
    }
    owner
}

/// The shell that forked `pid`, if `pid` is a subshell of it whose stdout is a pipe it does not
/// share (see [`lasting_ancestor`]).
fn captured_subshell_parent(pid: u32) -> Option<u32> {
    let child = ProcStat::read(pid)?;
    if child.ppid <= 1 {
        return None;
    }
    let parent = ProcStat::read(child.ppid)?;
    let forked_without_exec = child.comm == parent.comm
        && child.start_stack != 0
        && child.start_stack == parent.start_stack
        && fs::read(format!("/proc/{pid}/cmdline")).ok()?
            == fs::read(format!("/proc/{}/cmdline", child.ppid)).ok()?;
    let stdout = |p: u32| fs::read_link(format!("/proc/{p}/fd/1")).ok();
    let own = stdout(pid)?;
    let captured = own.to_string_lossy().starts_with("pipe:") && stdout(child.ppid) != Some(own);
    (forked_without_exec && captured).then_some(child.ppid)
}

/// The fields of `/proc/PID/stat` that tell a subshell from its shell.
struct ProcStat {
    comm: String,
    ppid: u32,
    /// Field 28, `startstack`: copied by fork, new after exec (0 when not ours to read).
    start_stack: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<ProcStat> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let (_, comm) = head.split_once('(')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(ProcStat {
            comm: comm.to_string(),
            ppid: fields.get(4 - 3)?.parse().ok()?,
            start_stack: fields.get(28 - 3)?.parse().ok()?,
        })
    }
}

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

/// Whether a process incarnation is alive on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// The pid exists and has the same start time.
    Alive,
    /// The pid does not exist: the process is gone.
    Gone,
    /// The pid exists but started at another time: the holder died and its pid was reused.
    PidReused {
        /// The start time of the process that now has the pid.
        now_started: u64,
    },
    /// `/proc` could not be read: nothing can be concluded.
    Unknown(String),
}

impl Liveness {
    /// True when the process is known dead.
    pub fn is_dead(&self) -> bool {
        matches!(self, Liveness::Gone | Liveness::PidReused { .. })
    }
}

/// Checks whether process `pid`, started at `start_time` (clock ticks since boot), still runs.
/// A zombie (state `Z`: dead, not yet reaped by its parent) or a dying process (`X`) is gone:
/// it will never write again, even though its `/proc` entry lingers.
pub fn liveness(pid: u32, start_time: u64) -> Liveness {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = match fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Liveness::Gone,
        Err(e) => return Liveness::Unknown(format!("cannot read {}: {e}", path.display())),
    };
    match (parse_state(&stat), parse_start_time(&stat)) {
        (Ok(_), Ok(t)) if t != start_time => Liveness::PidReused { now_started: t },
        (Ok('Z' | 'X' | 'x'), Ok(_)) => Liveness::Gone,
        (Ok(_), Ok(_)) => Liveness::Alive,
        (Err(e), _) | (_, Err(e)) => Liveness::Unknown(e),
    }
}

/// Field 3 (`state`) of a `/proc/PID/stat` line: `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
pub fn parse_state(stat: &str) -> Result<char, String> {
    let (_, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| "no ')' closing the command name".to_string())?;
    rest.split_whitespace()
        .next()
        .and_then(|f| f.chars().next())
        .ok_or_else(|| "no state field".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_a_reused_pid() {
        let pid = std::process::id();
        let t = process_start_time(pid).expect("own start time");
        assert_eq!(liveness(pid, t), Liveness::Alive);
        assert!(liveness(pid, t + 1).is_dead());
    }

    #[test]
    fn a_zombie_is_gone_even_though_its_proc_entry_lingers() {
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let pid = child.id();
        // Not reaped yet: it becomes a zombie once it exits.
        let mut state = ' ';
        for _ in 0..200 {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
            state = parse_state(&stat).expect("state");
            if state == 'Z' {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(state, 'Z');
        let t = process_start_time(pid).expect("zombie still has a start time");
        assert_eq!(liveness(pid, t), Liveness::Gone);
        child.wait().expect("reap");
    }

    #[test]
    fn a_pid_beyond_pid_max_is_gone() {
        assert_eq!(liveness(u32::MAX - 1, 1), Liveness::Gone);
    }

    /// Runs `script` under bash; its first stdout line is a pid to ask about, and the answer
    /// expected is bash's own pid (`$$`) when `up` is true, else that pid itself. The pid is
    /// reported by a child (`sh -c 'echo $PPID'`), as `locksmith` would be one: a builtin's
    /// own `>&3` would point the asked shell's stdout elsewhere while it writes.
    fn ancestor_case(script: &str, up: bool) {
        use std::io::{BufRead, BufReader};
        let mut bash = std::process::Command::new("bash")
            .args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("bash");
        let mut lines = BufReader::new(bash.stdout.take().expect("stdout"));
        let mut line = String::new();
        lines.read_line(&mut line).expect("a pid");
        let asked: u32 = line.trim().parse().expect("a pid");
        let expected = if up { bash.id() } else { asked };
        let got = lasting_ancestor(asked);
        let _ = bash.kill();
        let _ = bash.wait();
        assert_eq!(got, expected, "{script}");
    }

    /// Issue 15 item 9: `L=$(locksmith acquire R --json | jq .lease)` made the lock's owner the
    /// command substitution's subshell, which exits at once; the lock was reclaimed in 250 ms.
    #[test]
    fn a_captured_subshell_hands_ownership_to_the_shell_that_forked_it() {
        const REPORT: &str = "sh -c 'echo $PPID >&3'";
        // A pipeline stage inside a command substitution: two subshells up to the shell.
        ancestor_case(
            &format!("exec 3>&1; x=$( {{ {REPORT}; sleep 5; }} | cat ); echo \"$x\""),
            true,
        );
        // (`; :` keeps bash from exec-ing `sleep` in place of the subshell.)
        ancestor_case(&format!("exec 3>&1; x=$({REPORT}; sleep 5; :)"), true);
    }

    #[test]
    fn a_background_subshell_and_an_exec_keep_ownership() {
        // `( … ) &` writes where its shell writes: it may outlive the shell, so it owns.
        ancestor_case("( sh -c 'echo $PPID'; sleep 5; : ) & wait", false);
        // A new program (here bash again, exec'd) is not a subshell even with a captured stdout.
        ancestor_case(
            "exec 3>&1; x=$(bash -c \"sh -c 'echo \\$PPID >&3'; sleep 5; :\")",
            false,
        );
        // The process itself when nothing above it qualifies.
        let me = std::process::id();
        assert_eq!(lasting_ancestor(me), me);
    }

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

    #[test]
    fn boot_id_is_readable() {
        assert!(!boot_id().expect("boot id").is_empty());
    }
}
