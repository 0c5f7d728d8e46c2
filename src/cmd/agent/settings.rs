//! What the agent runs with: its configs and hooks, labels, state directory and intervals —
//! from the command line, or from an agent file (`--agent-file`, TOML) that the command line's
//! flags override.
//!
//! ```toml
//! state_dir = "/var/lib/locksmith-agent"
//! apply_lock = "/run/robot/mid-task"
//! probe_interval = "5s"
//! heartbeat_interval = "10s"
//! hook_timeout = "30s"            # each hook's default
//! health_interval = "30s"         # re-run health on the applied revision; default: off
//!
//! [labels]
//! role = "drone"
//!
//! [[config]]
//! name = "aim_lock_config.conf"
//! path = "/etc/aim/aim_lock_config.conf"
//! validate = "aimd --check \"$LOCKSMITH_FILE\""
//! validate_timeout = "10s"
//! reload = "systemctl reload aimd"
//! health = "systemctl is-active --quiet aimd"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use locksmith_agent::{AgentSpec, ConfigSpec, DEFAULT_HOOK_TIMEOUT_MS, Hook};
use serde::Deserialize;
use thiserror::Error;

use crate::cli::{AgentArgs, parse_duration};

/// Where the state lives when neither the command line nor the agent file says.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/locksmith-agent";
/// How often local lock holders are checked by default.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the agent heartbeats by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Everything `locksmith agent` runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The core's configs, state directory and apply-lock.
    pub spec: AgentSpec,
    /// Labels, for selectors.
    pub labels: BTreeMap<String, String>,
    /// Ghost prober period; zero: off.
    pub probe_interval: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// The longest reconnect backoff.
    pub max_backoff: Duration,
}

/// Why the settings cannot be used.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// The agent file could not be read.
    #[error("cannot read the agent file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The agent file is not valid.
    #[error("the agent file {path} is not valid: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        reason: String,
    },
    /// A value is not valid.
    #[error("{0}")]
    Invalid(String),
}

/// The agent file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentFile {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    state_dir: Option<PathBuf>,
    apply_lock: Option<PathBuf>,
    probe_interval: Option<String>,
    heartbeat_interval: Option<String>,
    hook_timeout: Option<String>,
    health_interval: Option<String>,
    #[serde(default, rename = "config")]
    configs: Vec<ConfigEntry>,
}

/// One `[[config]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigEntry {
    name: String,
    path: PathBuf,
    validate: Option<String>,
    validate_timeout: Option<String>,
    reload: Option<String>,
    reload_timeout: Option<String>,
    health: Option<String>,
    health_timeout: Option<String>,
}

impl Settings {
    /// The settings `args` give: the agent file's, with the command line's flags over them.
    pub fn from_args(args: &AgentArgs) -> Result<Self, SettingsError> {
        match &args.agent_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                    path: path.clone(),
                    source,
                })?;
                let file = parse_file(&text).map_err(|reason| SettingsError::File {
                    path: path.clone(),
                    reason,
                })?;
                Self::build(args, Some(file))
            }
            None => Self::build(args, None),
        }
    }

    fn build(args: &AgentArgs, file: Option<AgentFile>) -> Result<Self, SettingsError> {
        let file_duration = |v: Option<&String>, what: &str| -> Result<Option<Duration>, _> {
            v.map(|s| parse_duration(s).map_err(|e| SettingsError::Invalid(format!("{what}: {e}"))))
                .transpose()
        };
        let f = file.as_ref();
        let hook_timeout = match args.hook_timeout {
            Some(d) => d,
            None => file_duration(f.and_then(|f| f.hook_timeout.as_ref()), "hook_timeout")?
                .unwrap_or(Duration::from_millis(DEFAULT_HOOK_TIMEOUT_MS)),
        };
        let probe_interval = match args.probe_interval {
            Some(d) => d,
            None => file_duration(f.and_then(|f| f.probe_interval.as_ref()), "probe_interval")?
                .unwrap_or(DEFAULT_PROBE_INTERVAL),
        };
        let heartbeat_interval = match args.heartbeat_interval {
            Some(d) => d,
            None => file_duration(
                f.and_then(|f| f.heartbeat_interval.as_ref()),
                "heartbeat_interval",
            )?
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
        };
        if heartbeat_interval.is_zero() {
            return Err(SettingsError::Invalid(
                "--heartbeat-interval must be more than 0".into(),
            ));
        }
        let labels = match &args.labels {
            Some(l) => parse_labels(l).map_err(SettingsError::Invalid)?,
            None => f.map(|f| f.labels.clone()).unwrap_or_default(),
        };
        let state_dir = args
            .state_dir
            .clone()
            .or_else(|| f.and_then(|f| f.state_dir.clone()))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let health_interval = match args.health_interval {
            Some(d) => Some(d),
            None => file_duration(
                f.and_then(|f| f.health_interval.as_ref()),
                "health_interval",
            )?,
        };
        let mut spec = AgentSpec::new(state_dir);
        // Zero is off, like an absent setting.
        spec.health_interval_ms = health_interval.filter(|d| !d.is_zero()).map(millis);
        spec.apply_lock = args
            .apply_lock
            .clone()
            .or_else(|| f.and_then(|f| f.apply_lock.clone()));
        let hook = |cmd: &Option<String>, timeout: Option<Duration>| {
            cmd.as_ref().map(|c| Hook {
                command: c.clone(),
                timeout_ms: millis(timeout.unwrap_or(hook_timeout)),
            })
        };
        match file {
            Some(file) => {
                for c in file.configs {
                    let t = |v: &Option<String>, what: &str| {
                        file_duration(v.as_ref(), &format!("config {}: {what}", c.name))
                    };
                    let mut cs = ConfigSpec::new(c.name.clone(), c.path.clone());
                    cs.validate = hook(&c.validate, t(&c.validate_timeout, "validate_timeout")?);
                    cs.reload = hook(&c.reload, t(&c.reload_timeout, "reload_timeout")?);
                    cs.health = hook(&c.health, t(&c.health_timeout, "health_timeout")?);
                    spec.configs.push(cs);
                }
            }
            None => {
                for c in &args.configs {
                    let (name, path) = parse_config(c).map_err(SettingsError::Invalid)?;
                    let mut cs = ConfigSpec::new(name, path);
                    cs.validate = hook(&args.validate, None);
                    cs.reload = hook(&args.reload, None);
                    cs.health = hook(&args.health, None);
                    spec.configs.push(cs);
                }
            }
        }
        check_configs(&spec.configs)?;
        Ok(Self {
            spec,
            labels,
            probe_interval,
            heartbeat_interval,
            max_backoff: args.reconnect_max.max(Duration::from_millis(100)),
        })
    }
}

/// Parses an agent file's text (the format in this module's docs).
fn parse_file(text: &str) -> Result<AgentFile, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().replace('\n', " "))
}

/// Names valid in the store, each once, each with its own absolute target file.
fn check_configs(configs: &[ConfigSpec]) -> Result<(), SettingsError> {
    if configs.is_empty() {
        return Err(SettingsError::Invalid(
            "no config to apply: pass --config NAME=PATH (or [[config]] tables in --agent-file)"
                .into(),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    let mut targets = std::collections::BTreeSet::new();
    for c in configs {
        locksmith_config::validate_name(&c.name)
            .map_err(|e| SettingsError::Invalid(format!("config {:?}: {e}", c.name)))?;
        if !names.insert(c.name.clone()) {
            return Err(SettingsError::Invalid(format!(
                "config {} is named twice",
                c.name
            )));
        }
        if !c.target.is_absolute() || c.target.file_name().is_none() {
            return Err(SettingsError::Invalid(format!(
                "config {}: the target {} must be an absolute file path",
                c.name,
                c.target.display()
            )));
        }
        if !targets.insert(c.target.clone()) {
            return Err(SettingsError::Invalid(format!(
                "config {}: the target {} is another config's too",
                c.name,
                c.target.display()
            )));
        }
    }
    Ok(())
}

/// `NAME=PATH`.
fn parse_config(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_string(), Path::new(path).to_path_buf()))
        }
        _ => Err(format!(
            "--config {s:?} is not NAME=PATH, e.g. --config aim_lock_config.conf=/etc/aim/aim_lock_config.conf"
        )),
    }
}

/// `role=drone,site=hangar-2` (empty: no labels).
pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                labels.insert(k.trim().to_string(), v.trim().to_string());
            }
            _ => {
                return Err(format!(
                    "label {pair:?} is not KEY=VALUE, e.g. --labels role=drone,site=hangar-2"
                ));
            }
        }
    }
    Ok(labels)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> AgentArgs {
        #[derive(Parser)]
        struct P {
            #[command(flatten)]
            a: AgentArgs,
        }
        let mut argv = vec!["agent"];
        argv.extend_from_slice(extra);
        P::try_parse_from(argv).expect("parses").a
    }

    #[test]
    fn the_shipped_sample_agent_file_parses_with_the_real_parser() {
        let text = include_str!("../../../dist/agent.toml.example");
        let file = parse_file(text).expect("the sample parses");
        let settings = Settings::build(&args(&[]), Some(file)).expect("and is valid");
        assert!(settings.spec.configs.len() >= 2, "{settings:?}");
        assert_eq!(
            settings.labels.get("role").map(String::as_str),
            Some("drone")
        );
        let aim = &settings.spec.configs[0];
        assert_eq!(aim.name, "aim_lock_config.conf");
        let validate = aim.validate.as_ref().expect("a validate hook");
        assert_eq!(validate.timeout_ms, 10_000);
        assert!(settings.spec.apply_lock.is_some());
    }

    #[test]
    fn command_line_flags_override_the_agent_file() {
        let file = parse_file(
            "state_dir = \"/var/lib/a\"\nprobe_interval = \"7s\"\n[labels]\nrole = \"arm\"\n\
             [[config]]\nname = \"x.conf\"\npath = \"/etc/x.conf\"\nreload = \"true\"\n",
        )
        .expect("parses");
        let s = Settings::build(
            &args(&["--state-dir", "/tmp/b", "--labels", "role=drone"]),
            Some(file),
        )
        .expect("valid");
        assert_eq!(s.spec.state_dir, PathBuf::from("/tmp/b"));
        assert_eq!(s.probe_interval, Duration::from_secs(7));
        assert_eq!(s.labels["role"], "drone");
        assert_eq!(
            s.spec.configs[0].reload.as_ref().map(|h| h.timeout_ms),
            Some(DEFAULT_HOOK_TIMEOUT_MS)
        );
    }

    #[test]
    fn the_health_interval_is_off_unless_set_and_the_flag_overrides_the_file() {
        let config = "[[config]]\nname = \"x.conf\"\npath = \"/etc/x.conf\"\n";
        let off =
            Settings::build(&args(&[]), Some(parse_file(config).expect("parses"))).expect("valid");
        assert_eq!(off.spec.health_interval_ms, None);
        let file = || parse_file(&format!("health_interval = \"30s\"\n{config}")).expect("parses");
        let s = Settings::build(&args(&[]), Some(file())).expect("valid");
        assert_eq!(s.spec.health_interval_ms, Some(30_000));
        let s = Settings::build(&args(&["--health-interval", "5s"]), Some(file())).expect("valid");
        assert_eq!(s.spec.health_interval_ms, Some(5_000));
        let s = Settings::build(&args(&["--health-interval", "0"]), Some(file())).expect("valid");
        assert_eq!(s.spec.health_interval_ms, None, "0 turns it off");
        let bad = parse_file(&format!("health_interval = \"soon\"\n{config}")).expect("parses");
        let e = Settings::build(&args(&[]), Some(bad)).expect_err("not a duration");
        assert!(e.to_string().contains("health_interval"), "{e}");
    }

    #[test]
    fn bad_agent_files_and_flags_are_refused_with_what_is_wrong() {
        assert!(
            parse_file("[[config]]\nname = \"x\"\npath = \"/x\"\nrelaod = \"y\"\n")
                .expect_err("typo")
                .contains("relaod")
        );
        let none = Settings::build(&args(&[]), None).expect_err("no config");
        assert!(none.to_string().contains("--config NAME=PATH"), "{none}");
        let rel = Settings::build(&args(&["--config", "x.conf=x.conf"]), None)
            .expect_err("relative target");
        assert!(rel.to_string().contains("absolute"), "{rel}");
        let twice = Settings::build(
            &args(&["--config", "x.conf=/a/x", "--config", "x.conf=/a/y"]),
            None,
        )
        .expect_err("twice");
        assert!(twice.to_string().contains("named twice"), "{twice}");
        assert!(parse_labels("role").is_err());
        assert_eq!(parse_labels("").expect("empty"), BTreeMap::new());
    }
}
