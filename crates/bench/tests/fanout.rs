//! The `fanout` binary against a real etcd and a real ZooKeeper (Debian's packages), with a few
//! watchers: each system starts, every watcher is registered (the binary checks ZooKeeper's own
//! watch count) and every one sees the one change, or the binary fails. Checks the harness, not
//! the speed.

use std::process::Command;

#[test]
fn every_etcd_and_zookeeper_watcher_sees_the_one_change() {
    let out = Command::new(env!("CARGO_BIN_EXE_fanout"))
        .args(["--watchers", "20", "--etcd-connections", "3"])
        .output()
        .expect("run fanout");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "fanout failed:\n{stdout}\n{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| etcd") || l.starts_with("| zookeeper"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 2, "one row per system:\n{stdout}");
    // | system | watchers | connections | ...: 3 connections for etcd, one session a watcher.
    assert_eq!(&rows[0][1..4], ["etcd", "20", "3"], "{stdout}");
    assert_eq!(&rows[1][1..4], ["zookeeper", "20", "20"], "{stdout}");
    for row in &rows {
        let p50: f64 = row[4].parse().expect("p50");
        let max: f64 = row[6].parse().expect("max");
        assert!(p50 > 0.0 && p50 <= max, "{row:?}");
    }
}
