//! `locksmith token create | ls | revoke`: API tokens (the admin role's).
//!
//! A new token's secret is printed once, by `create`, and never again: the server keeps only
//! its hash, `ls` shows everything else, and no message or log line of the CLI ever shows a
//! secret.

use comfy_table::{ContentArrangement, Table, presets};
use locksmith_api::{CreateTokenRequest, CreatedToken, TokenView, format_wall};

use crate::cli::{Global, TokenCommand, TokenCreateArgs, TokenLsArgs, TokenRevokeArgs};
use crate::exit::Exit;
use crate::failure::{Context, Failure};
use crate::output::{out, out_json};

pub async fn token(
    global: &Global,
    command: TokenCommand,
    node_typed: bool,
) -> anyhow::Result<Exit> {
    match command {
        TokenCommand::Create(args) => create(global, args, node_typed).await,
        TokenCommand::Ls(args) => ls(global, args).await,
        TokenCommand::Revoke(args) => revoke(global, args).await,
    }
}

async fn create(global: &Global, args: TokenCreateArgs, node_typed: bool) -> anyhow::Result<Exit> {
    let subject = format!("token {}", args.name.trim());
    let ctx = Context {
        subject: &subject,
        wait_flag: "--wait",
    };
    let req = CreateTokenRequest {
        name: args.name.clone(),
        role: args.role,
        // Only as typed: a LOCKSMITH_NODE exported for lock owners must not bind a token.
        node: global.node.clone().filter(|_| node_typed),
        prefixes: args.prefixes,
        ttl_ms: args.ttl.map(super::millis),
    };
    let made = super::client(global, ctx)?
        .create_token(&req)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&made)?;
    } else {
        out(&created_lines(&made))?;
    }
    Ok(Exit::Ok)
}

/// What `create` prints: what was made, the secret alone on its line, and to store it now.
fn created_lines(t: &CreatedToken) -> String {
    let mut scope = vec![format!("role {}", t.role)];
    if let Some(node) = &t.node {
        scope.push(format!("node {node}"));
    }
    if !t.prefixes.is_empty() {
        scope.push(format!("prefixes {}", t.prefixes.join(",")));
    }
    scope.push(match t.expires_at_ms {
        Some(at) => format!("expires {}", format_wall(at)),
        None => "no expiry".to_string(),
    });
    format!(
        "made token {} {:?} ({})\n{}\nstore this secret now: it is shown only this once (the \
         server keeps only its hash) — e.g. in a file only you can read, used with --token-file \
         FILE or $LOCKSMITH_TOKEN_FILE; revoke it with 'locksmith token revoke {}'",
        t.id,
        t.name,
        scope.join(", "),
        t.token,
        t.id
    )
}

async fn ls(global: &Global, args: TokenLsArgs) -> anyhow::Result<Exit> {
    let ctx = Context {
        subject: "tokens",
        wait_flag: "--wait",
    };
    let listed = super::client(global, ctx)?
        .tokens()
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&listed)?;
    } else {
        out(&tokens_table(&listed.tokens))?;
    }
    Ok(Exit::Ok)
}

/// The columns of `token ls`.
const HEADER: [&str; 8] = [
    "ID", "NAME", "ROLE", "NODE", "PREFIXES", "CREATED", "EXPIRES", "STATE",
];

/// `token ls`'s table: one row per token, revoked and expired ones included.
fn tokens_table(tokens: &[TokenView]) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(HEADER);
    for t in tokens {
        table.add_row([
            t.id.clone(),
            t.name.clone(),
            t.role.to_string(),
            t.node.clone().unwrap_or_else(|| "-".to_string()),
            if t.prefixes.is_empty() {
                "(any)".to_string()
            } else {
                t.prefixes.join(",")
            },
            format_wall(t.created_at_ms),
            t.expires_at_ms
                .map_or_else(|| "never".to_string(), format_wall),
            state(t).to_string(),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table.trim_fmt()
}

/// `live`, `revoked` or `expired`.
fn state(t: &TokenView) -> &'static str {
    match (t.live, t.revoked_at_ms) {
        (true, _) => "live",
        (false, Some(_)) => "revoked",
        (false, None) => "expired",
    }
}

async fn revoke(global: &Global, args: TokenRevokeArgs) -> anyhow::Result<Exit> {
    let id = args.id.trim();
    let ctx = Context {
        subject: id,
        wait_flag: "--wait",
    };
    let revoked = super::client(global, ctx)?
        .revoke_token(id)
        .await
        .map_err(|e| Failure::from_client(&e, ctx))?;
    if args.json {
        out_json(&revoked)?;
    } else {
        out(&format!(
            "token {} {:?} (role {}) revoked: it stops working now, and its event streams and \
             wire connections close within a second",
            revoked.id, revoked.name, revoked.role
        ))?;
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use locksmith_api::Role;

    use super::*;

    fn view(id: &str, live: bool, revoked: Option<u64>) -> TokenView {
        TokenView {
            id: id.into(),
            name: "ci".into(),
            role: Role::Client,
            node: None,
            prefixes: vec!["deploy/".into()],
            created_at_ms: 0,
            created_by: "admin".into(),
            expires_at_ms: None,
            revoked_at_ms: revoked,
            live,
        }
    }

    #[test]
    fn the_listing_has_every_column_and_each_state() {
        let table = tokens_table(&[
            view("tok-1", true, None),
            view("tok-2", false, Some(1)),
            view("tok-3", false, None),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        let header: Vec<&str> = lines[0].split_whitespace().collect();
        assert_eq!(header, HEADER);
        let states: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split_whitespace().last().unwrap_or_default())
            .collect();
        assert_eq!(states, ["live", "revoked", "expired"]);
    }

    #[test]
    fn create_prints_the_secret_alone_on_its_line_and_says_to_store_it() {
        let made = CreatedToken {
            id: "tok-4".into(),
            name: "ci".into(),
            role: Role::Node,
            node: Some("node-7".into()),
            prefixes: Vec::new(),
            token: "lsm_abc".into(),
            created_at_ms: 0,
            created_by: "admin".into(),
            expires_at_ms: None,
        };
        let text = created_lines(&made);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "made token tok-4 \"ci\" (role node, node node-7, no expiry)"
        );
        assert_eq!(lines[1], "lsm_abc");
        assert!(lines[2].starts_with("store this secret now: it is shown only this once"));
    }
}
