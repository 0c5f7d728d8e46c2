//! What `run` and its command's supervisor say to each other over their control socket: one
//! JSON object per line.
//!
//! The socket is also the supervisor's lifeline. `run` holds the only other end, so the
//! supervisor reads end-of-file the moment `run` closes it — or dies, even by SIGKILL: the kernel
//! closes a dead process's descriptors. That is when the supervisor kills everything the command
//! started. (A parent-death signal would do the same, but it fires when the *thread* that forked
//! exits, and `run`'s async runtime forks from whichever worker thread it pleases.)

use serde::{Deserialize, Serialize};

/// `run` → supervisor, once the lock is held: what to run. Sent once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawn {
    /// The program, looked up in `PATH` as a shell would.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Variables added to the inherited environment (`LOCKSMITH_FENCE_TOKEN`, …).
    pub env: Vec<(String, String)>,
    /// The resource locked, for the supervisor's own messages.
    pub resource: String,
    /// The command as messages show it.
    pub shown: String,
}

/// Supervisor → `run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The command runs, as `pid`.
    Started {
        /// Its pid.
        pid: u32,
    },
    /// The command could not be started.
    Failed {
        /// The OS error, if there was one (`ENOENT`: not found).
        errno: Option<i32>,
        /// What went wrong.
        message: String,
    },
    /// The command has exited and none of its processes is left: `run` may release the lock,
    /// then close the socket, which lets the supervisor exit. (It stays until then, so the
    /// lock's owner — the supervisor — is alive until the release is done.)
    Exited {
        /// Its exit code, if it exited.
        code: Option<i32>,
        /// The signal that killed it, if one did.
        signal: Option<i32>,
    },
}

/// One message as a line.
pub fn line<T: Serialize>(message: &T) -> String {
    // Plain data of strings and integers: serializing cannot fail.
    let mut text = serde_json::to_string(message).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_each_and_read_back() {
        let spawn = Spawn {
            program: "sh".into(),
            args: vec!["-c".into(), "echo a\nb".into()],
            env: vec![("LOCKSMITH_FENCE_TOKEN".into(), "7".into())],
            resource: "r".into(),
            shown: "sh -c echo a b".into(),
        };
        let text = line(&spawn);
        assert_eq!(text.matches('\n').count(), 1);
        assert_eq!(
            serde_json::from_str::<Spawn>(text.trim_end()).expect("spawn"),
            spawn
        );
        for report in [
            Report::Started { pid: 4 },
            Report::Failed {
                errno: Some(2),
                message: "no such file".into(),
            },
            Report::Exited {
                code: None,
                signal: Some(9),
            },
        ] {
            let text = line(&report);
            assert_eq!(
                serde_json::from_str::<Report>(text.trim_end()).expect("report"),
                report
            );
        }
    }
}
