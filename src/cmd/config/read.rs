//! Reading configs: `config get`, `history`, `diff`, `ls`.

use std::io::Write;

use comfy_table::{ContentArrangement, Table, presets};
use locksmith_api::configs::{ConfigSummary, HistoryResponse};
use locksmith_api::format_wall;
use locksmith_config::{RevisionKind, RevisionMeta};

use super::{client_for, ctx};
use crate::cli::{ConfigDiffArgs, ConfigGetArgs, ConfigLsArgs, ConfigNameArgs, Global};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output::{out, out_json};

/// Hex digits of a SHA-256 a listing shows (as the stamp line does).
const SHA_SHOWN: usize = locksmith_config::STAMP_SHA_LEN;

pub async fn get(global: &Global, args: ConfigGetArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let client = client_for(global, name)?;
    let got = match args.rev {
        Some(rev) => client.config_revision(name, rev, args.stamp).await,
        None => client.config(name, args.stamp).await,
    }
    .map_err(|e| Failure::from_client(&e, ctx(name)))?;
    if args.json {
        out_json(&got)?;
        return Ok(Exit::Ok);
    }
    let bytes = locksmith_client::configs::bytes_of(&got.content, client.base())
        .map_err(|e| Failure::from_client(&e, ctx(name)))?;
    // Exactly the stored bytes (a raw config's too): no newline added, nothing re-encoded.
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&bytes)?;
    stdout.flush()?;
    Ok(Exit::Ok)
}

pub async fn history(global: &Global, args: ConfigNameArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let history = client_for(global, name)?
        .config_history(name)
        .await
        .map_err(|e| Failure::from_client(&e, ctx(name)))?;
    if args.json {
        out_json(&history)?;
    } else {
        out(&history_table(&history))?;
    }
    Ok(Exit::Ok)
}

/// The columns of `config history`.
const HISTORY_HEADER: [&str; 10] = [
    "REV", "STATE", "KIND", "AUTHOR", "OWNER", "TOKEN", "WHEN", "SIZE", "SHA256", "MESSAGE",
];

/// `config history`'s table: one row per revision, oldest first.
fn history_table(history: &HistoryResponse) -> String {
    let mut table = listing(&HISTORY_HEADER);
    for m in &history.revisions {
        let state = if history.head.current == Some(m.rev) {
            "current"
        } else if m.draft {
            "draft"
        } else {
            "-"
        };
        table.add_row([
            m.rev.to_string(),
            state.to_string(),
            kind(m),
            m.author.name.clone(),
            m.owner.clone(),
            m.token.to_string(),
            format_wall(m.at_ms),
            m.size.to_string(),
            short(&m.sha256),
            message(&m.message),
        ]);
    }
    finish(table)
}

/// `written`, `rollback of 2`, `promotion of 5`.
fn kind(m: &RevisionMeta) -> String {
    match m.kind {
        RevisionKind::Written => "written".to_string(),
        RevisionKind::RolledBack { from } => format!("rollback of {from}"),
        RevisionKind::Promoted { from } => format!("promotion of {from}"),
    }
}

fn short(sha: &str) -> String {
    sha.chars().take(SHA_SHOWN).collect()
}

/// A message on one line (`-` when there is none).
fn message(m: &str) -> String {
    if m.trim().is_empty() {
        "-".to_string()
    } else {
        m.replace(['\n', '\r'], " ")
    }
}

pub async fn diff(global: &Global, args: ConfigDiffArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let diff = client_for(global, name)?
        .config_diff(name, args.from, args.to)
        .await
        .map_err(|e| Failure::from_client(&e, ctx(name)))?;
    if args.json {
        out_json(&diff)?;
    } else if diff.diff.is_empty() {
        crate::output::note(&format!(
            "{name}: rev {} and rev {} have the same content",
            diff.from, diff.to
        ))?;
    } else {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(diff.diff.as_bytes())?;
        stdout.flush()?;
    }
    Ok(Exit::Ok)
}

pub async fn ls(global: &Global, args: ConfigLsArgs) -> anyhow::Result<Exit> {
    let listed = super::super::client(global, ctx("configs"))?
        .configs()
        .await
        .map_err(|e| Failure::from_client(&e, ctx("configs")))?;
    if args.json {
        out_json(&listed)?;
    } else {
        out(&configs_table(&listed.configs))?;
    }
    Ok(Exit::Ok)
}

/// The columns of `config ls`.
const LS_HEADER: [&str; 9] = [
    "NAME", "FORMAT", "CURRENT", "LATEST", "SCHEMA", "AUTHOR", "TOKEN", "WHEN", "SHA256",
];

/// `config ls`'s table: one row per config, by name; the current revision's provenance.
fn configs_table(configs: &[ConfigSummary]) -> String {
    let mut table = listing(&LS_HEADER);
    for c in configs {
        let h = &c.head;
        let cur = c.current_revision.as_ref();
        table.add_row([
            h.name.clone(),
            h.format.map_or_else(|| "-".to_string(), |f| f.to_string()),
            h.current.map_or_else(|| "-".to_string(), |r| r.to_string()),
            h.latest.to_string(),
            if h.schema.is_some() { "yes" } else { "-" }.to_string(),
            cur.map_or_else(|| "-".to_string(), |m| m.author.name.clone()),
            cur.map_or_else(|| "-".to_string(), |m| m.token.to_string()),
            cur.map_or_else(|| "-".to_string(), |m| format_wall(m.at_ms)),
            cur.map_or_else(|| "-".to_string(), |m| short(&m.sha256)),
        ]);
    }
    finish(table)
}

/// A listing like the others (`locks`, `token ls`): no borders, two spaces between columns.
fn listing(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    table
}

fn finish(mut table: Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

#[cfg(test)]
mod tests {
    use locksmith_config::{Author, Format, Head};
    use locksmith_core::FenceToken;

    use super::*;

    fn meta(rev: u64, draft: bool, kind: RevisionKind) -> RevisionMeta {
        RevisionMeta {
            name: "aim_lock_config.conf".into(),
            rev,
            sha256: "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56abcd".into(),
            size: 213,
            format: Format::Conf,
            message: "raise the threshold\nfor the night".into(),
            author: Author {
                token: "tok-1".into(),
                name: "alice".into(),
            },
            owner_node: "node-7".into(),
            owner: "alice@node-7 (pid 4121)".into(),
            at_ms: 0,
            token: FenceToken(4711),
            draft,
            base: None,
            kind,
        }
    }

    #[test]
    fn history_shows_every_column_current_and_draft_and_one_line_messages() {
        let history = HistoryResponse {
            head: Head {
                name: "aim_lock_config.conf".into(),
                format: Some(Format::Conf),
                current: Some(3),
                latest: 3,
                schema: None,
            },
            revisions: vec![
                meta(1, false, RevisionKind::Written),
                meta(2, true, RevisionKind::Written),
                meta(3, false, RevisionKind::Promoted { from: 2 }),
            ],
        };
        let table = history_table(&history);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header, HISTORY_HEADER);
        assert!(lines[1].starts_with("1    -  "), "{table}");
        assert!(lines[2].contains(" draft "), "{table}");
        assert!(lines[3].contains(" current "), "{table}");
        assert!(lines[3].contains("promotion of 2"), "{table}");
        assert!(lines[3].contains(" ab12cd34ef56 "), "{table}");
        assert!(
            lines[3].ends_with("raise the threshold for the night"),
            "{table}"
        );
    }
}
