//! A fleet of model agents that run the planner's commands, and a harness that feeds their
//! reports back — the planner's driver, in memory.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use locksmith_rollout::{
    Command, Endpoint, Event, Outcome, Refusal, ReportState, Rollout, RolloutSpec,
};

pub const T0: u64 = 1_700_000_000_000;

/// `n` endpoints `n00`, `n01`, … online, on revision `lkg` (their last-known-good).
pub fn fleet(n: usize, lkg: u64) -> Vec<Endpoint> {
    (0..n)
        .map(|i| Endpoint {
            node: format!("n{i:02}"),
            labels: BTreeMap::from([("role".to_owned(), "drone".to_owned())]),
            online: true,
            applied_rev: lkg,
            last_known_good: lkg,
        })
        .collect()
}

pub fn spec(rev: u64) -> RolloutSpec {
    let mut s = RolloutSpec::new("aim_lock_config.conf", rev, "alice");
    s.draft = true;
    s
}

/// A model agent.
#[derive(Debug, Clone, Default)]
pub struct Agent {
    pub online: bool,
    pub desired: Option<u64>,
    pub applied: u64,
    /// Applying this revision fails (its health hook fails); last-known-good stays.
    pub fails: Option<u64>,
    /// Never reports.
    pub silent: bool,
    /// Every revision it applied, in order.
    pub applies: Vec<u64>,
    /// Times its desired revision was set to one it already had.
    pub repeats: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub agents: BTreeMap<String, Agent>,
    pub promoted: Vec<u64>,
    pub frozen: Vec<String>,
    pub released: usize,
    pub finished: Vec<Outcome>,
}

impl Fleet {
    pub fn new(endpoints: &[Endpoint]) -> Fleet {
        let agents = endpoints
            .iter()
            .map(|e| {
                let agent = Agent {
                    online: e.online,
                    applied: e.applied_rev,
                    ..Agent::default()
                };
                (e.node.clone(), agent)
            })
            .collect();
        Fleet {
            agents,
            ..Fleet::default()
        }
    }

    /// Runs commands; returns the reports they cause.
    pub fn run(&mut self, cmds: &[Command]) -> Vec<Event> {
        let mut out = Vec::new();
        for cmd in cmds {
            match cmd {
                Command::SetDesired { rev, nodes } => {
                    for n in nodes {
                        out.extend(self.desire(n, *rev));
                    }
                }
                Command::Restore { node, rev } => out.extend(self.desire(node, *rev)),
                Command::Pin { nodes } => {
                    for (n, rev) in nodes {
                        if let Some(a) = self.agents.get_mut(n) {
                            a.desired = Some(*rev);
                        }
                    }
                }
                Command::PromoteDraft { rev } => self.promoted.push(*rev),
                Command::Freeze { reason } => self.frozen.push(reason.clone()),
                Command::ReleaseLock => self.released += 1,
                Command::Finished(o) => self.finished.push(o.clone()),
                _ => {}
            }
        }
        out
    }

    /// Sets a desired revision; an online agent applies a changed one at once.
    pub fn desire(&mut self, node: &str, rev: u64) -> Option<Event> {
        let a = self.agents.get_mut(node)?;
        if a.desired == Some(rev) {
            a.repeats += 1;
            return None;
        }
        a.desired = Some(rev);
        if a.online { Self::apply(node, a) } else { None }
    }

    /// The agent applies its desired revision (if it differs) and reports.
    fn apply(node: &str, a: &mut Agent) -> Option<Event> {
        let rev = a.desired?;
        if a.silent || rev == a.applied {
            return None;
        }
        let state = if a.fails == Some(rev) {
            ReportState::Failed
        } else {
            a.applied = rev;
            a.applies.push(rev);
            ReportState::Applied
        };
        Some(Event::Report {
            node: node.to_owned(),
            rev,
            state,
            applied_rev: a.applied,
        })
    }

    /// The agent comes back: the Online event, then what it applies.
    pub fn come_online(&mut self, node: &str) -> Vec<Event> {
        let mut out = vec![Event::Online {
            node: node.to_owned(),
        }];
        if let Some(a) = self.agents.get_mut(node) {
            a.online = true;
            out.extend(Self::apply(node, a));
        }
        out
    }
}

/// The planner, the fleet, a clock and the last persisted record.
#[derive(Debug)]
pub struct Harness {
    pub rollout: Rollout,
    pub fleet: Fleet,
    pub now: u64,
    pub record: Vec<u8>,
    /// Every command issued, in order.
    pub log: Vec<Command>,
}

impl Harness {
    pub fn new(spec: RolloutSpec, endpoints: &[Endpoint]) -> Harness {
        let rollout = Rollout::new(spec, endpoints).expect("a valid rollout");
        let record = rollout.to_record();
        Harness {
            rollout,
            fleet: Fleet::new(endpoints),
            now: T0,
            record,
            log: Vec::new(),
        }
    }

    /// Delivers an event and every report it causes; returns the event's own result.
    pub fn send(&mut self, event: Event) -> Result<Vec<Command>, Refusal> {
        let mut queue = VecDeque::from([event]);
        let mut first = None;
        let mut all = Vec::new();
        while let Some(ev) = queue.pop_front() {
            let result = self.rollout.handle(self.now, ev);
            self.record = self.rollout.to_record();
            match &result {
                Ok(cmds) => {
                    all.extend(cmds.clone());
                    self.log.extend(cmds.clone());
                    queue.extend(self.fleet.run(cmds));
                }
                Err(_) if first.is_none() => return result,
                Err(_) => {}
            }
            if first.is_none() {
                first = Some(());
            }
        }
        Ok(all)
    }

    pub fn start(&mut self) -> Vec<Command> {
        self.send(Event::Started).expect("starts")
    }

    /// Moves the clock and ticks.
    pub fn advance(&mut self, ms: u64) -> Vec<Command> {
        self.now += ms;
        self.send(Event::Tick).expect("a tick is never refused")
    }

    pub fn gate(
        &mut self,
        wave: usize,
        gate: &str,
        verdict: locksmith_rollout::Verdict,
        samples: u64,
    ) -> Result<Vec<Command>, Refusal> {
        self.send(Event::GateResult {
            wave,
            gate: gate.to_owned(),
            verdict,
            samples,
        })
    }

    pub fn online(&mut self, node: &str) -> Vec<Command> {
        let events = self.fleet.come_online(node);
        let mut all = Vec::new();
        for e in events {
            all.extend(self.send(e).expect("reports are never refused"));
        }
        all
    }

    pub fn offline(&mut self, node: &str) -> Vec<Command> {
        if let Some(a) = self.fleet.agents.get_mut(node) {
            a.online = false;
        }
        self.send(Event::Offline {
            node: node.to_owned(),
        })
        .expect("never refused")
    }

    /// Nodes that were sent `rev` by `SetDesired`, in order.
    pub fn sent(&self, rev: u64) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|c| match c {
                Command::SetDesired { rev: r, nodes } if *r == rev => Some(nodes.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    pub fn outcome(&self) -> Option<&Outcome> {
        self.fleet.finished.last()
    }
}

/// Each node's applies are a subsequence of `[rev, lkg]`: nothing twice, nothing out of order.
pub fn assert_applies_in_order(fleet: &Fleet, rev: u64, lkg: u64) {
    for (node, a) in &fleet.agents {
        let ok = match a.applies.as_slice() {
            [] => true,
            [x] => *x == rev || *x == lkg,
            [x, y] => *x == rev && *y == lkg,
            _ => false,
        };
        assert!(ok, "{node} applied {:?} (rev {rev}, lkg {lkg})", a.applies);
    }
}
