//! A rig: an agent driven over MemFs with scripted hooks and a server stand-in that answers
//! fetches from a content map.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use locksmith_agent::{
    Action, AgentSpec, ConfigSpec, Desired, Driver, Event, Hook, HookKind, HookResult, HookRun,
    HookStatus, Hooks, ManualClock, MemFs, Report,
};
use locksmith_config::{Format, sha256_hex};

/// Hooks whose results a test scripts per kind (default: ok), recording every run.
#[derive(Debug, Clone, Default)]
pub struct Scripted {
    pub inner: Arc<Mutex<ScriptedInner>>,
}

#[derive(Debug, Default)]
pub struct ScriptedInner {
    pub next: HashMap<HookKind, VecDeque<HookResult>>,
    pub runs: Vec<HookRun>,
    /// The staged file's bytes each validate saw.
    pub validated: Vec<Option<Vec<u8>>>,
}

impl Scripted {
    pub fn push(&self, kind: HookKind, result: HookResult) {
        self.inner
            .lock()
            .expect("hooks lock")
            .next
            .entry(kind)
            .or_default()
            .push_back(result);
    }
    pub fn fail(&self, kind: HookKind, code: i32, tail: &str) {
        self.push(
            kind,
            HookResult {
                status: HookStatus::Exit { code },
                tail: tail.to_owned(),
                ..HookResult::ok()
            },
        );
    }
    pub fn runs(&self) -> Vec<(HookKind, u64)> {
        self.inner
            .lock()
            .expect("hooks lock")
            .runs
            .iter()
            .map(|r| (r.kind, r.rev))
            .collect()
    }
}

/// Scripted hooks that can also look at the file system (what validate saw).
#[derive(Debug, Clone)]
pub struct Hooked {
    pub script: Scripted,
    pub fs: MemFs,
}

impl Hooks for Hooked {
    fn run(&mut self, run: &HookRun) -> HookResult {
        let mut i = self.script.inner.lock().expect("hooks lock");
        i.runs.push(run.clone());
        if run.kind == HookKind::Validate {
            let seen = self.fs.get(&run.file);
            i.validated.push(seen);
        }
        i.next
            .get_mut(&run.kind)
            .and_then(|q| q.pop_front())
            .unwrap_or_else(HookResult::ok)
    }
}

pub const NAME: &str = "aim_lock_config.conf";

pub fn target() -> PathBuf {
    PathBuf::from("/etc/drone/aim.conf")
}

pub fn state_dir() -> PathBuf {
    PathBuf::from("/var/lib/locksmith")
}

pub fn apply_lock() -> PathBuf {
    PathBuf::from("/run/drone/apply.lock")
}

pub fn spec(hooks: bool) -> AgentSpec {
    let mut c = ConfigSpec::new(NAME, target());
    if hooks {
        c.validate = Some(Hook::new("check $LOCKSMITH_FILE"));
        c.reload = Some(Hook::new("reload"));
        c.health = Some(Hook::new("health"));
    }
    let mut s = AgentSpec::new(state_dir());
    s.configs.push(c);
    s.apply_lock = Some(apply_lock());
    s
}

/// Content of revision `rev`: a valid conf file.
pub fn content(rev: u64) -> Vec<u8> {
    format!("# rev {rev}\nsafety_threshold = 0.{rev}\nmode = \"hot\"\n").into_bytes()
}

pub fn desired(rev: u64, token: u64, fence: u64) -> Desired {
    let c = content(rev);
    Desired {
        config: NAME.to_owned(),
        rev,
        sha256: sha256_hex(&c),
        size: c.len() as u64,
        format: Format::Conf,
        token,
        fence,
        shadow: false,
        base_rev: None,
        rollout: None,
        content: None,
    }
}

pub fn shadow(rev: u64, token: u64, fence: u64) -> Desired {
    Desired {
        shadow: true,
        base_rev: Some(rev.saturating_sub(1)),
        ..desired(rev, token, fence)
    }
}

pub struct Rig {
    pub fs: MemFs,
    pub script: Scripted,
    pub clock: ManualClock,
    pub spec: AgentSpec,
    pub driver: Option<Driver<MemFs, Hooked, ManualClock>>,
    /// The server's content per revision (what a fetch answers).
    pub server: BTreeMap<u64, Vec<u8>>,
    pub online: bool,
    pub reports: Vec<Report>,
    pub wakes: Vec<u64>,
}

impl Rig {
    pub fn new(hooks: bool) -> Rig {
        Self::with(MemFs::new(), spec(hooks))
    }

    pub fn with(fs: MemFs, spec: AgentSpec) -> Rig {
        let mut rig = Rig {
            fs,
            script: Scripted::default(),
            clock: ManualClock::default(),
            spec,
            driver: None,
            server: (1..=64).map(|r| (r, content(r))).collect(),
            online: true,
            reports: Vec::new(),
            wakes: Vec::new(),
        };
        rig.boot();
        rig
    }

    /// Starts (or restarts) the agent on the same file system.
    pub fn boot(&mut self) {
        let hooks = Hooked {
            script: self.script.clone(),
            fs: self.fs.clone(),
        };
        let (driver, out) = Driver::open(
            self.spec.clone(),
            self.fs.clone(),
            hooks,
            self.clock.clone(),
        )
        .expect("open");
        self.driver = Some(driver);
        self.absorb(out);
        if self.online {
            self.send(Event::Connected);
        }
    }

    /// Loses power and boots again.
    pub fn crash_and_boot(&mut self) {
        self.driver = None;
        self.fs.power_cycle();
        self.boot();
    }

    pub fn send(&mut self, event: Event) {
        let Some(d) = self.driver.as_mut() else {
            return;
        };
        let out = d.handle(event);
        self.absorb(out);
    }

    pub fn desire(&mut self, d: Desired) {
        self.send(Event::Desired(d));
    }

    fn absorb(&mut self, out: Vec<Action>) {
        let mut queue: VecDeque<Action> = out.into();
        while let Some(a) = queue.pop_front() {
            match a {
                Action::Fetch { config, rev, .. } => {
                    let event = match (self.online, self.server.get(&rev)) {
                        (true, Some(c)) => Event::Fetched {
                            config,
                            rev,
                            content: c.clone(),
                        },
                        _ => Event::FetchFailed {
                            config,
                            rev,
                            error: "offline".into(),
                        },
                    };
                    let Some(d) = self.driver.as_mut() else {
                        return;
                    };
                    queue.extend(d.handle(event));
                }
                Action::Report(r) => self.reports.push(r),
                Action::Wake { at_ms } => self.wakes.push(at_ms),
                other => panic!("the driver handed out a local action: {other:?}"),
            }
        }
    }

    pub fn last(&self) -> &Report {
        self.reports.last().expect("a report")
    }

    pub fn target(&self) -> Option<Vec<u8>> {
        self.fs.get(&target())
    }

    pub fn file(&self, p: &Path) -> Option<Vec<u8>> {
        self.fs.get(p)
    }
}
