//! One process on this node, read from `/proc/PID`: its start time, its command line, and
//! whether the incarnation `(pid, start time)` still runs.

use std::fs;
use std::io;
use std::path::PathBuf;

use crate::IdentityError;

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

/// The command line of process `pid` (`/proc/PID/cmdline`), if readable and not empty.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line from /proc/PID/stat, with `comm` replaced.
    fn stat_with_comm(comm: &str) -> String {
        format!(
            "4121 ({comm}) S 1 4121 4121 0 -1 4194560 1043 0 0 0 3 1 0 0 20 0 1 0 \
             987654 12345678 900 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
        )
    }

    #[test]
    fn start_time_is_field_22() {
        assert_eq!(parse_start_time(&stat_with_comm("bash")), Ok(987_654));
    }

    #[test]
    fn start_time_survives_parens_and_spaces_in_comm() {
        assert_eq!(parse_start_time(&stat_with_comm("a) b")), Ok(987_654));
        assert_eq!(parse_start_time(&stat_with_comm(") 1 2 3 (")), Ok(987_654));
        assert_eq!(parse_start_time(&stat_with_comm("")), Ok(987_654));
    }

    #[test]
    fn start_time_refuses_garbage() {
        assert!(parse_start_time("").is_err());
        assert!(parse_start_time("12 (x) S 1 2").is_err());
        assert!(parse_start_time(&stat_with_comm("x").replace("987654", "soon")).is_err());
    }

    #[test]
    fn our_own_start_time_is_readable() {
        assert!(process_start_time(std::process::id()).expect("own stat") > 0);
    }

    #[test]
    fn a_missing_process_is_named() {
        // Above the kernel's pid_max limit (4194304), so it can never exist.
        let err = process_start_time(4_194_305 + 17).expect_err("no such pid");
        assert!(matches!(err, IdentityError::NoSuchProcess { .. }), "{err}");
        assert!(err.to_string().contains("4194322"), "{err}");
    }

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

    #[test]
    fn our_command_line_is_read() {
        let line = command_line(std::process::id()).expect("own cmdline");
        assert!(!line.is_empty());
    }
}
