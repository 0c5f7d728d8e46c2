//! The real file system and real hooks (`sh -c`) in a temporary directory.

use std::path::Path;
use std::time::{Duration, Instant};

use locksmith_agent::{
    Action, AgentSpec, ConfigSpec, Driver, Event, Hook, HookKind, HookRun, HookStatus, Hooks,
    RealFs, Report, ReportState, ShellHooks, SystemClock, TAIL_BYTES,
};
use locksmith_config::{Format, sha256_hex};

fn run(command: &str, timeout_ms: u64, file: &Path) -> locksmith_agent::HookResult {
    ShellHooks.run(&HookRun {
        kind: HookKind::Validate,
        command: command.into(),
        timeout_ms,
        config: "app.conf".into(),
        rev: 7,
        file: file.to_path_buf(),
    })
}

#[test]
fn hooks_see_their_environment_and_keep_the_output_tail() {
    let r = run(
        "echo \"$LOCKSMITH_CONFIG $LOCKSMITH_REV $LOCKSMITH_FILE\"; echo oops >&2; exit 3",
        5_000,
        Path::new("/tmp/x"),
    );
    assert_eq!(r.status, HookStatus::Exit { code: 3 });
    assert_eq!(r.tail, "app.conf 7 /tmp/x\noops\n");
    // Only the last 4 KiB are kept.
    let r = run(
        "head -c 100000 /dev/zero | tr '\\0' a; echo END",
        5_000,
        Path::new("/tmp/x"),
    );
    assert!(r.is_ok());
    assert_eq!(r.tail.len(), TAIL_BYTES);
    assert!(r.tail.ends_with("aEND\n"));
}

#[test]
fn a_hook_past_its_timeout_is_killed_with_its_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("child.pid");
    let started = Instant::now();
    let r = run(
        &format!(
            "sleep 30 & echo $! > {}; echo started; wait",
            pidfile.display()
        ),
        300,
        Path::new("/tmp/x"),
    );
    assert_eq!(r.status, HookStatus::TimedOut { after_ms: 300 });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(r.tail, "started\n");
    let pid = std::fs::read_to_string(&pidfile).expect("pid");
    // The background child was in the hook's process group: killed too. SIGKILL is delivered
    // at once but the exit runs when the kernel schedules it (on a loaded machine the child can
    // still be `R` and exiting a moment later), so wait for it to be gone or a zombie.
    let stat = format!("/proc/{}/stat", pid.trim());
    let alive =
        || std::fs::read_to_string(&stat).is_ok_and(|s| !s.contains(") Z ") && !s.contains(") X "));
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !alive(),
        "the hook's child {pid} outlived it: {:?}",
        std::fs::read_to_string(&stat)
    );
}

struct Real {
    driver: Driver<RealFs, ShellHooks, SystemClock>,
    reports: Vec<Report>,
}

impl Real {
    fn desire(&mut self, rev: u64, content: &[u8]) {
        let d = locksmith_agent::Desired {
            config: "app.conf".into(),
            rev,
            sha256: sha256_hex(content),
            size: content.len() as u64,
            format: Format::Conf,
            token: 1,
            fence: 1,
            shadow: false,
            base_rev: None,
            rollout: None,
            content: None,
        };
        let mut out = self.driver.handle(Event::Desired(d));
        while let Some(a) = out.pop() {
            match a {
                Action::Fetch { config, rev: r, .. } => {
                    out.extend(self.driver.handle(Event::Fetched {
                        config,
                        rev: r,
                        content: content.to_vec(),
                    }))
                }
                Action::Report(r) => self.reports.push(r),
                _ => {}
            }
        }
    }
}

#[test]
fn applies_on_disk_and_a_failing_health_puts_the_old_file_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("etc/app.conf");
    std::fs::create_dir_all(target.parent().expect("dir")).expect("mkdir");
    std::fs::write(&target, "port = 1\n").expect("seed");
    let mut c = ConfigSpec::new("app.conf", &target);
    c.validate = Some(Hook::new(
        "grep -q port \"$LOCKSMITH_FILE\" || { echo no port in $LOCKSMITH_FILE; exit 1; }",
    ));
    c.health = Some(Hook {
        command: "test ! -e \"$LOCKSMITH_FILE.down\" || { echo unhealthy; sleep 10; }".into(),
        timeout_ms: 300,
    });
    let mut spec = AgentSpec::new(dir.path().join("state"));
    spec.configs.push(c);
    let (driver, _) =
        Driver::open(spec.clone(), RealFs, ShellHooks, SystemClock::default()).expect("open");
    let mut real = Real {
        driver,
        reports: Vec::new(),
    };

    real.desire(1, b"port = 2\n");
    assert_eq!(
        real.reports.last().map(|r| r.state),
        Some(ReportState::Applied)
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"port = 2\n");

    // Validate fails: the target is untouched and no staged file is left.
    real.desire(2, b"host = \"x\"\n");
    let r = real.reports.last().expect("report").clone();
    assert_eq!(r.state, ReportState::Failed);
    let staged = dir.path().join("etc/.app.conf.locksmith-staged");
    assert_eq!(
        r.error.as_deref(),
        Some(
            format!(
                "validate hook exited with status 1: no port in {}",
                staged.display()
            )
            .as_str()
        )
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"port = 2\n");
    assert!(!staged.exists());

    // Health hangs past its timeout: killed, and revision 1 is back.
    std::fs::write(dir.path().join("etc/app.conf.down"), "").expect("down");
    real.desire(3, b"port = 3\n");
    let r = real.reports.last().expect("report").clone();
    assert_eq!(r.state, ReportState::Failed);
    assert_eq!(
        r.error.as_deref(),
        Some(
            "health hook timed out after 300 ms and was killed: unhealthy; restored last-known-good revision 1"
        )
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"port = 2\n");

    // A restart finds the same state and last-known-good.
    drop(real);
    let (driver, out) =
        Driver::open(spec, RealFs, ShellHooks, SystemClock::default()).expect("reopen");
    assert!(out.is_empty(), "nothing to recover: {out:?}");
    let fence = driver.agent().state().configs["app.conf"].fence;
    assert_eq!((fence.applied_rev, fence.applied_token), (1, 1));
    assert_eq!(
        std::fs::read(
            dir.path()
                .join("state")
                .join(locksmith_agent::lkg_file("app.conf", 1))
        )
        .expect("lkg"),
        b"port = 2\n"
    );
}
