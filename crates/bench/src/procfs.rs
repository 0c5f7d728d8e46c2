//! What the scale benchmark reads from `/proc`: a process's memory (`status`), its CPU time
//! (`stat`), its open sockets (`fd`), the whole machine's CPU time, and this process's limit on
//! open files. Linux only, like the server's own probe.

use std::io;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Memory of one process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (`VmHWM`), KiB.
    pub hwm_kib: u64,
}

impl Memory {
    /// `VmRSS` in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    /// `VmHWM` in MiB.
    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// `VmRSS` and `VmHWM` of `pid` (`"self"` for this process).
pub fn memory(pid: &str) -> io::Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> io::Result<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| bad_data(format!("/proc/{pid}/status has no {name}")))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// CPU time `pid` has used so far (user + system, `utime + stime` of `/proc/PID/stat`), in
/// clock ticks (see [`clock_ticks_per_second`]).
pub fn cpu_ticks(pid: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: count fields after
    // its closing parenthesis. Fields 14 and 15 (utime, stime) are the 12th and 13th after it.
    let after = text
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad_data(format!("/proc/{pid}/stat: no command name")))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| bad_data(format!("/proc/{pid}/stat: field {} unreadable", i + 3)))
    };
    Ok(tick(11)? + tick(12)?)
}

/// The whole machine's CPU time so far, from the `cpu` line of `/proc/stat`, in clock ticks:
/// `(busy, total)`, where busy is everything but idle and iowait.
pub fn machine_ticks() -> io::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| bad_data("/proc/stat has no cpu line".into()))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// Clock ticks per second (`getconf CLK_TCK`), and whether it was read (false: assumed 100,
/// the value on every Linux architecture that matters).
pub fn clock_ticks_per_second() -> (u64, bool) {
    let read = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0);
    match read {
        Some(t) => (t, true),
        None => (100, false),
    }
}

/// How many of `pid`'s open file descriptors are sockets (its listener and connections).
pub fn socket_count(pid: &str) -> io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        if std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
        {
            n += 1;
        }
    }
    Ok(n)
}

/// This process's soft limit on open files (`Max open files` of `/proc/self/limits`); `None`
/// when unlimited.
pub fn open_files_limit() -> io::Result<Option<u64>> {
    let text = std::fs::read_to_string("/proc/self/limits")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or_else(|| bad_data("/proc/self/limits has no Max open files".into()))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .ok_or_else(|| bad_data("/proc/self/limits: Max open files unreadable".into()))?;
    if soft == "unlimited" {
        return Ok(None);
    }
    soft.parse()
        .map(Some)
        .map_err(|_| bad_data(format!("/proc/self/limits: Max open files {soft:?}")))
}

/// CPU counters at one instant: a server process's, this process's, and the machine's.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    at: Instant,
    server: u64,
    me: u64,
    machine_busy: u64,
}

/// CPU used between two [`CpuSample`]s, each in percent of one core.
#[derive(Debug, Clone, Copy)]
pub struct CpuUsage {
    /// Wall time between the samples, seconds.
    pub secs: f64,
    /// The server process.
    pub server: f64,
    /// This process (the load generator).
    pub me: f64,
    /// The whole machine (every core; 200 % is two cores busy).
    pub machine: f64,
    /// Everything else on the machine: `machine - server - me` (other processes, the kernel's
    /// own threads).
    pub others: f64,
}

impl CpuSample {
    /// Reads the counters now; `server` is the server's pid.
    pub fn read(server: &str) -> io::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            server: cpu_ticks(server)?,
            me: cpu_ticks("self")?,
            machine_busy: machine_ticks()?.0,
        })
    }

    /// Like [`read`](Self::read) before the server exists: its counter reads as 0.
    pub fn without_server() -> io::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            server: 0,
            me: cpu_ticks("self")?,
            machine_busy: machine_ticks()?.0,
        })
    }

    /// The usage from `self` to `later`, with `ticks_per_s` from [`clock_ticks_per_second`].
    pub fn usage(&self, later: &CpuSample, ticks_per_s: u64) -> CpuUsage {
        let secs = later.at.duration_since(self.at).as_secs_f64().max(1e-9);
        let pct = |a: u64, b: u64| b.saturating_sub(a) as f64 / ticks_per_s as f64 / secs * 100.0;
        let server = pct(self.server, later.server);
        let me = pct(self.me, later.me);
        let machine = pct(self.machine_busy, later.machine_busy);
        CpuUsage {
            secs,
            server,
            me,
            machine,
            others: (machine - server - me).max(0.0),
        }
    }
}

/// Waits until the machine is quiet — everything but this process uses less than
/// `max_busy_pct` of one core over a 2 s sample — for at most `within`. Returns the last
/// sample's busy percentage and whether it was quiet. Measurements of time and CPU on a
/// 2-core machine are only worth something when nothing else runs.
pub async fn wait_quiet(max_busy_pct: f64, within: std::time::Duration) -> io::Result<(f64, bool)> {
    let (ticks, _) = clock_ticks_per_second();
    let deadline = Instant::now() + within;
    loop {
        let a = CpuSample::without_server()?;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let u = a.usage(&CpuSample::without_server()?, ticks);
        let busy = u.machine - u.me;
        if busy < max_busy_pct {
            return Ok((busy, true));
        }
        if Instant::now() >= deadline {
            return Ok((busy, false));
        }
    }
}

/// Total size of the regular files directly in `dir`, bytes.
pub fn dir_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let meta = entry?.metadata()?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

fn bad_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let m = memory("self").expect("status");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        cpu_ticks("self").expect("stat");
        let (busy, total) = machine_ticks().expect("/proc/stat");
        assert!(total >= busy && total > 0);
        let _ = open_files_limit().expect("limits");
        let _ = socket_count("self").expect("fds");
    }
}
