//! Who a lock taken by a short-lived command should belong to: the process that lasts.

use std::fs;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
