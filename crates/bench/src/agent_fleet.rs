//! A fleet of real `locksmith agent` processes for the `agents` and `rollout` binaries, and the
//! fenced write of a config revision they measure against.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use locksmith_api::configs::RevisionMeta;

/// `n` agent processes `bench-000…`, killed and reaped on drop.
#[derive(Debug)]
pub struct AgentFleet(Vec<Child>);

impl AgentFleet {
    /// Starts `n` agents of `bin` against `url`, each applying `config` to a file of its own
    /// under `dir/agent-NNN` (its state and log there too), labelled `role=bench`.
    pub fn spawn(
        bin: &Path,
        url: &str,
        dir: &Path,
        n: usize,
        config: &str,
    ) -> anyhow::Result<Self> {
        let mut fleet = AgentFleet(Vec::new());
        for i in 0..n {
            let home = dir.join(format!("agent-{i:03}"));
            std::fs::create_dir_all(&home)?;
            let target = home.join(config);
            let child = Command::new(bin)
                .args(["--server", url, "--node", &format!("bench-{i:03}"), "agent"])
                .arg("--config")
                .arg(format!("{config}={}", target.display()))
                .arg("--state-dir")
                .arg(home.join("state"))
                .args(["--labels", "role=bench"])
                .current_dir(&home)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(home.join("agent.log"))?)
                .spawn()
                .context("start an agent")?;
            fleet.0.push(child);
        }
        Ok(fleet)
    }

    /// The first agent's pid.
    pub fn first_pid(&self) -> Option<u32> {
        self.0.first().map(Child::id)
    }
}

impl Drop for AgentFleet {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes revision content `n` of `config` (a draft with `draft`) as an orchestrator does —
/// under a lock taken for it and released after ([`locksmith_sim::ops::write_revision`]); the
/// revision's metadata.
pub async fn write_revision(
    client: &locksmith_client::Client,
    config: &str,
    n: usize,
    draft: bool,
) -> anyhow::Result<RevisionMeta> {
    let content = format!("round = {n}\nthreshold = 0.{n}\n");
    locksmith_sim::ops::write_revision(client, config, &content, draft)
        .await
        .context("write a revision")
}
