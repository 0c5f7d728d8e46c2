//! Who the CLI says holds a lock: node, pid, process start time, boot id, user and purpose.
//!
//! `(node, boot id, PID namespace, pid, start time)` names one process incarnation, so the
//! server can tell a live holder from a later process that reused its pid, from a node that
//! rebooted, or from a process with the same pid in another container of the same machine.
//! Everything is read from Linux `/proc`; each failure is a typed error naming what was read.

use std::fs;

use locksmith_core::Owner;

const PASSWD: &str = "/etc/passwd";
/// The longest purpose the server accepts, in bytes (`Owner::validate`).
const MAX_PURPOSE: usize = 1024;

pub use locksmith_host::{
    IdentityError, boot_id, hostname, lasting_ancestor, pid_namespace, process_start_time,
};

/// Builds the owner for process `pid` on this node. `node` overrides the host name, `purpose`
/// the default purpose (computed only when needed).
pub fn owner(
    node: Option<&str>,
    pid: u32,
    purpose: Option<&str>,
    default_purpose: impl FnOnce() -> String,
) -> Result<Owner, IdentityError> {
    let node = match node {
        Some(n) => n.to_string(),
        None => hostname()?,
    };
    // First: it also proves /proc is this namespace's, so that the start time read next is
    // `pid`'s and not another process's.
    let pid_ns = pid_namespace()?;
    Ok(Owner {
        node,
        pid,
        start_time: process_start_time(pid)?,
        boot_id: boot_id()?,
        user: user(),
        purpose: purpose.map_or_else(|| clean_purpose(&default_purpose()), str::to_string),
        pid_ns,
    })
}

/// The user: `$USER`, else the name of our uid in /etc/passwd, else `uid:N`.
pub fn user() -> String {
    match std::env::var("USER") {
        Ok(name) if !name.trim().is_empty() => return name,
        _ => {}
    }
    let uid = nix::unistd::getuid().as_raw();
    fs::read_to_string(PASSWD)
        .ok()
        .and_then(|passwd| user_in_passwd(&passwd, uid))
        .unwrap_or_else(|| format!("uid:{uid}"))
}

/// The name of `uid` in an /etc/passwd text (`name:x:uid:gid:…`).
pub fn user_in_passwd(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let entry_uid = fields.nth(1)?.parse::<u32>().ok()?;
        (entry_uid == uid && !name.is_empty()).then(|| name.to_string())
    })
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

/// A purpose the server accepts: control characters become spaces, and it is cut to the
/// server's limit on a character boundary.
pub fn clean_purpose(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.len() > MAX_PURPOSE {
        let mut end = MAX_PURPOSE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    let trimmed = s.trim();
    if trimmed.is_empty() {
        "locksmith".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locksmith_host::parse_start_time;

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
    fn our_own_start_time_and_boot_id_are_readable() {
        let me = std::process::id();
        assert!(process_start_time(me).expect("own stat") > 0);
        assert!(!boot_id().expect("boot id").is_empty());
    }

    #[test]
    fn a_missing_process_is_named() {
        // Above the kernel's pid_max limit (4194304), so it can never exist.
        let err = process_start_time(4_194_305 + 17).expect_err("no such pid");
        assert!(matches!(err, IdentityError::NoSuchProcess { .. }), "{err}");
        assert!(err.to_string().contains("4194322"), "{err}");
    }

    #[test]
    fn passwd_lookup_finds_the_uid() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # comment\n\
                      broken\n\
                      ops:x:1000:1000:Ops:/home/ops:/bin/sh\n";
        assert_eq!(user_in_passwd(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_in_passwd(passwd, 1000).as_deref(), Some("ops"));
        assert_eq!(user_in_passwd(passwd, 42), None);
    }

    #[test]
    fn purposes_are_made_acceptable() {
        assert_eq!(clean_purpose("sh -c\necho"), "sh -c echo");
        assert_eq!(clean_purpose("  "), "locksmith");
        let long = "é".repeat(MAX_PURPOSE);
        let cut = clean_purpose(&long);
        assert!(cut.len() <= MAX_PURPOSE && cut.chars().all(|c| c == 'é'));
    }
}
