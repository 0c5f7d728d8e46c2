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
    let values = cpu_line()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// Time the hypervisor gave this machine's vCPUs to someone else so far (`steal` of the `cpu`
/// line of `/proc/stat`), and all CPU time, in clock ticks: `(steal, total)`.
pub fn steal_ticks() -> io::Result<(u64, u64)> {
    let values = cpu_line()?;
    let total: u64 = values.iter().take(8).sum();
    Ok((values.get(7).copied().unwrap_or(0), total))
}

fn cpu_line() -> io::Result<Vec<u64>> {
    let text = std::fs::read_to_string("/proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or_else(|| bad_data("/proc/stat has no cpu line".into()))?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect())
}

/// How this machine's idle vCPUs wait, which sets what every wake-up costs in a VM: the
/// kernel, the cpuidle driver, and the guest's halt-polling window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleSetup {
    /// `uname -r`, from `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// `/sys/devices/system/cpu/cpuidle/current_driver` (`none` when there is none).
    pub cpuidle_driver: String,
    /// `/sys/module/haltpoll/parameters/guest_halt_poll_ns`, when the haltpoll governor is
    /// there: how long an idle vCPU polls before it halts.
    pub halt_poll_ns: Option<u64>,
}

impl IdleSetup {
    /// Reads the setup; what cannot be read is `unknown` / `None`.
    pub fn read() -> Self {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .ok()
        };
        Self {
            kernel: read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into()),
            cpuidle_driver: read("/sys/devices/system/cpu/cpuidle/current_driver")
                .unwrap_or_else(|| "unknown".into()),
            halt_poll_ns: read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
                .and_then(|s| s.parse().ok()),
        }
    }

    /// One line for a report, e.g. `kernel 6.18.44; cpuidle driver haltpoll, guest halt
    /// polling 0 ns (an idle vCPU halts at once)`.
    pub fn describe(&self) -> String {
        let polling = match self.halt_poll_ns {
            Some(0) => ", guest halt polling 0 ns (an idle vCPU halts at once)".to_string(),
            Some(ns) => format!(", guest halt polling {} µs", ns / 1000),
            None => String::new(),
        };
        format!(
            "kernel {}; cpuidle driver {}{polling}",
            self.kernel, self.cpuidle_driver
        )
    }
}

/// What a benchmark report says about the machine it ran on: [`IdleSetup`], and the share of
/// CPU time stolen by the hypervisor between [`start`](Self::start) and
/// [`describe`](Self::describe) (a busy neighbour on the host moves every number).
#[derive(Debug, Clone)]
pub struct MachineNote {
    setup: IdleSetup,
    steal_at_start: Option<(u64, u64)>,
}

impl MachineNote {
    /// Reads the setup and the steal counter now.
    pub fn start() -> Self {
        Self {
            setup: IdleSetup::read(),
            steal_at_start: steal_ticks().ok(),
        }
    }

    /// `Machine: kernel …; cpuidle driver …; steal 1.2 % of CPU time during the run.`
    pub fn describe(&self) -> String {
        let steal = match (self.steal_at_start, steal_ticks().ok()) {
            (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => format!(
                "; steal {:.1} % of CPU time during the run",
                100.0 * s1.saturating_sub(s0) as f64 / (t1 - t0) as f64
            ),
            _ => String::new(),
        };
        format!("Machine: {}{steal}.", self.setup.describe())
    }
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
        let (steal, total) = steal_ticks().expect("/proc/stat");
        assert!(steal <= total && total > 0);
        assert!(!IdleSetup::read().kernel.is_empty());
    }

    #[test]
    fn the_idle_setup_says_whether_an_idle_vcpu_polls_before_it_halts() {
        let mut setup = IdleSetup {
            kernel: "6.18.44".into(),
            cpuidle_driver: "haltpoll".into(),
            halt_poll_ns: Some(0),
        };
        assert_eq!(
            setup.describe(),
            "kernel 6.18.44; cpuidle driver haltpoll, \
             guest halt polling 0 ns (an idle vCPU halts at once)"
        );
        setup.halt_poll_ns = Some(200_000);
        assert!(setup.describe().ends_with("guest halt polling 200 µs"));
        setup.halt_poll_ns = None;
        assert_eq!(setup.describe(), "kernel 6.18.44; cpuidle driver haltpoll");
    }
}
