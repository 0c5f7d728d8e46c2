//! Who holds a lock: the [`Owner`] of a process on this node — node, boot id, PID namespace,
//! pid, start time, user and purpose.
//!
//! `(node, boot id, PID namespace, pid, start time)` names one process incarnation, so the
//! server can tell a live holder from a later process that reused its pid, from a node that
//! rebooted, or from a process with the same pid in another container of the same machine.
//! Everything is read from Linux `/proc`; each failure is a typed error naming what was read.

use std::fs;

use locksmith_core::Owner;

use crate::{IdentityError, boot_id, hostname, pid_namespace, process_start_time};

const PASSWD: &str = "/etc/passwd";
/// The longest purpose the server accepts, in bytes (`Owner::validate`).
pub const MAX_PURPOSE: usize = 1024;

/// Builds the owner for process `pid` on this node. `node` overrides the host name, `purpose`
/// the default purpose (computed only when needed, and made acceptable by [`clean_purpose`]).
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

    #[test]
    fn our_own_owner_names_this_process_incarnation() {
        let me = std::process::id();
        let o = owner(Some("node-1"), me, None, || "sh -c\necho".into()).expect("own owner");
        assert_eq!((o.node.as_str(), o.pid), ("node-1", me));
        assert_eq!(o.start_time, process_start_time(me).expect("start time"));
        assert_eq!(o.boot_id, boot_id().expect("boot id"));
        assert_eq!(o.pid_ns, pid_namespace().expect("namespace"));
        assert_eq!(o.purpose, "sh -c echo");
        assert!(o.validate().is_ok());
        let given = owner(Some("node-1"), me, Some("deploy"), || unreachable!()).expect("owner");
        assert_eq!(given.purpose, "deploy");
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
