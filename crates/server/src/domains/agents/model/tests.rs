//! The agents model's invariants (see the module docs), on the model alone.

use std::collections::BTreeMap;

use locksmith_api::agents::{AgentReport, ApplyState};
use locksmith_config::{Author, Configs, Format, WriteRequest, Writer};
use locksmith_core::{FenceToken, LockTable, Mutation, Now, Owner, TableConfig};

use super::*;

const T0: u64 = 1_796_613_120_000;

fn write(configs: &mut Configs, name: &str, content: &str, token: u64, draft: bool) -> u64 {
    let writer = Writer {
        author: Author {
            token: "tok-1".into(),
            name: "ops".into(),
        },
        owner: Owner {
            node: "ops-1".into(),
            pid: 100,
            start_time: 7,
            boot_id: "boot".into(),
            user: "ops".into(),
            purpose: "config update".into(),
            pid_ns: None,
        },
        token: FenceToken(token),
    };
    let request = WriteRequest {
        name: name.into(),
        format: Format::Conf,
        content: content.as_bytes().to_vec(),
        message: "m".into(),
        draft,
        writer,
        max_bytes: locksmith_config::DEFAULT_MAX_BYTES,
    };
    configs.write(request, T0).expect("written").value.rev
}

fn reg(node: &str, labels: &[(&str, &str)], configs: &[&str]) -> Registration {
    Registration {
        node: node.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        boot_id: "boot-a".into(),
        version: "0.1".into(),
        configs: configs.iter().map(|c| (*c).to_owned()).collect(),
        registered_at_ms: T0,
    }
}

fn report(config: &str, rev: u64, state: ApplyState) -> AgentReport {
    AgentReport {
        config: config.into(),
        rev,
        state,
        applied_rev: rev,
        applied_token: 5,
        error: None,
        received_to_applied_ms: Some(3),
        diff: None,
        metrics: Default::default(),
    }
}

fn now(wall_ms: u64) -> Now {
    Now::at(1_000, wall_ms)
}

/// Desired is the current revision; a shadow overrides it for its node only, and ends once
/// another revision becomes current. The fence with nobody holding the lock is the highest
/// token a revision was written under.
#[test]
fn desired_is_current_unless_a_shadow_targets_the_node_while_its_base_is_current() {
    let mut configs = Configs::new();
    let locks = LockTable::new(TableConfig::default());
    let mut agents = Agents::new();
    agents.register(reg("d1", &[], &["aim.conf"]), T0);
    agents.register(reg("d2", &[], &["aim.conf"]), T0);
    assert_eq!(
        desired(
            &configs,
            &locks,
            &agents,
            &Rollouts::new(),
            "d1",
            "aim.conf",
            now(T0)
        ),
        None
    );

    let r1 = write(&mut configs, "aim.conf", "a = 1\n", 5, false);
    let draft = write(&mut configs, "aim.conf", "a = 2\n", 9, true);
    let d = desired(
        &configs,
        &locks,
        &agents,
        &Rollouts::new(),
        "d1",
        "aim.conf",
        now(T0),
    )
    .expect("desired");
    assert_eq!((d.rev, d.shadow, d.token, d.fence), (r1, false, 5, 9));

    agents.shadow("aim.conf", draft, Some(r1), &["d1".to_owned()]);
    let d1 = desired(
        &configs,
        &locks,
        &agents,
        &Rollouts::new(),
        "d1",
        "aim.conf",
        now(T0),
    )
    .expect("d1");
    let d2 = desired(
        &configs,
        &locks,
        &agents,
        &Rollouts::new(),
        "d2",
        "aim.conf",
        now(T0),
    )
    .expect("d2");
    assert_eq!((d1.rev, d1.shadow, d1.base_rev), (draft, true, Some(r1)));
    assert_eq!((d2.rev, d2.shadow), (r1, false));

    let r3 = write(&mut configs, "aim.conf", "a = 3\n", 11, false);
    let d1 = desired(
        &configs,
        &locks,
        &agents,
        &Rollouts::new(),
        "d1",
        "aim.conf",
        now(T0),
    )
    .expect("d1");
    assert_eq!((d1.rev, d1.shadow, d1.fence), (r3, false, 11));
}

/// Registering again without a config deletes its report in the same batch; a report of a
/// config the node did not register is refused; only a change of state or revision is news.
#[test]
fn reports_follow_the_registration_and_only_changes_are_news() {
    let mut agents = Agents::new();
    assert!(
        agents
            .report("d1", report("a.conf", 1, ApplyState::Applied), T0)
            .is_none()
    );
    agents.register(reg("d1", &[], &["a.conf", "b.conf"]), T0);
    assert!(
        agents
            .report("d1", report("c.conf", 1, ApplyState::Applied), T0)
            .is_none()
    );
    let (_, first) = agents
        .report("d1", report("a.conf", 1, ApplyState::Applied), T0)
        .expect("stored");
    let (_, same) = agents
        .report("d1", report("a.conf", 1, ApplyState::Applied), T0 + 1)
        .expect("stored");
    let (_, failed) = agents
        .report("d1", report("a.conf", 2, ApplyState::Failed), T0 + 2)
        .expect("stored");
    assert_eq!((first, same, failed), (true, false, true));

    let mutations = agents.register(reg("d1", &[], &["b.conf"]), T0 + 3);
    assert!(
        mutations
            .iter()
            .any(|m| matches!(m, Mutation::DeleteRecord { space, key }
            if space == REPORTS && key == "d1/a.conf")),
        "{mutations:?}"
    );
}

/// What the records hold restores the same registrations and reports; presence restarts from
/// the newest durable time, with no stream open.
#[test]
fn restore_rebuilds_registrations_and_reports_from_their_records() {
    let mut agents = Agents::new();
    let mut records: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let mut apply = |ms: Vec<Mutation>| {
        for m in ms {
            m.validate().expect("within the store's limits");
            match m {
                Mutation::PutRecord { space, key, value } => {
                    records.insert((space, key), value);
                }
                Mutation::DeleteRecord { space, key } => {
                    records.remove(&(space, key));
                }
                _ => {}
            }
        }
    };
    apply(agents.register(reg("d1", &[("role", "drone")], &["a.conf"]), T0));
    apply(agents.register(reg("d2", &[("role", "arm")], &["a.conf"]), T0));
    let (m, _) = agents
        .report("d1", report("a.conf", 4, ApplyState::Refused), T0 + 50)
        .expect("stored");
    apply(m.into_iter().collect());
    agents.stream("d1", true, T0 + 60);

    let regs = records
        .iter()
        .filter(|((s, _), _)| s == AGENTS)
        .map(|(_, v)| serde_json::from_slice(v).expect("registration"))
        .collect();
    let reports = records
        .iter()
        .filter(|((s, _), _)| s == REPORTS)
        .map(|((_, k), v)| {
            let node = k.split_once('/').expect("node/config").0.to_owned();
            (node, serde_json::from_slice(v).expect("report"))
        })
        .collect();
    let restored = Agents::restore(regs, reports);
    let (configs, locks) = (Configs::new(), LockTable::new(TableConfig::default()));
    let late = now(T0 + 10 * ONLINE_WINDOW_MS);
    let before = agents
        .view(&configs, &locks, &Rollouts::new(), "d1", late)
        .expect("d1");
    let after = restored
        .view(&configs, &locks, &Rollouts::new(), "d1", late)
        .expect("d1");
    assert!(before.online && !after.online, "a stream is not durable");
    assert_eq!(after.configs, before.configs);
    assert_eq!(after.labels, before.labels);
    assert_eq!(after.last_seen_ms, T0 + 50);
    let drones: Vec<_> = restored
        .matching(&parse_selector("role=drone").expect("selector"))
        .map(|r| r.node.clone())
        .collect();
    assert_eq!(drones, vec!["d1".to_owned()]);
}

/// Online: a stream open, or heard from within the window.
#[test]
fn online_is_an_open_stream_or_a_recent_word() {
    let mut agents = Agents::new();
    agents.register(reg("d1", &[], &[]), T0);
    assert_eq!(agents.online_count(T0 + ONLINE_WINDOW_MS), 1);
    assert_eq!(agents.online_count(T0 + ONLINE_WINDOW_MS + 1), 0);
    agents.stream("d1", true, T0);
    assert_eq!(agents.online_count(T0 + 10 * ONLINE_WINDOW_MS), 1);
    agents.stream("d1", false, T0 + 10 * ONLINE_WINDOW_MS);
    assert_eq!(agents.online_count(T0 + 11 * ONLINE_WINDOW_MS + 1), 0);
    assert!(agents.touch("d1", T0 + 20 * ONLINE_WINDOW_MS));
    assert_eq!(agents.online_count(T0 + 20 * ONLINE_WINDOW_MS), 1);
}

/// Selectors and names: what the report keys and the stream rely on.
#[test]
fn selectors_and_node_names_are_checked() {
    assert!(parse_selector("role").is_err());
    assert_eq!(
        parse_selector(" role=drone , site=h2 ").expect("ok"),
        vec![
            ("role".into(), "drone".into()),
            ("site".into(), "h2".into())
        ]
    );
    assert!(parse_selector("").expect("ok").is_empty());
    assert!(validate_node("drone-7.hangar_2").is_ok());
    for bad in ["", "a/b", "a b", &"n".repeat(254)] {
        assert!(validate_node(bad).is_err(), "{bad:?}");
    }
    assert!(validate_label("role", "drone").is_ok());
    assert!(validate_label("ro,le", "x").is_err());
    assert!(validate_label("role", "a,b").is_err());
}
