//! The token table: every token ever made (revoked ones stay, for listings and audit), indexed
//! by the hash of its secret, and the principal a presented secret authenticates.

use std::sync::Arc;

use imbl::{HashMap, OrdMap};

use serde::{Deserialize, Serialize};

use crate::access::{Access, Forbidden, Permission, Role};
use crate::secret::{Secret, SecretHash, hash_secret};

/// The record keyspace tokens are stored in (one record per token, keyed by its id).
pub const TOKEN_SPACE: &str = "tokens";

/// Longest token name.
const MAX_NAME: usize = 64;
/// Most prefixes one token may carry.
const MAX_PREFIXES: usize = 64;

/// A token as stored: everything but its secret, of which only the hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Its id (`tok-12`): what listings, revocation and audit records name.
    pub id: String,
    /// Who holds it (a person, a service, a node's agent): the operator name of every hold,
    /// acknowledgement and break made with it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For a `node` token, the node it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Resource prefixes it may lock (a `client` or `node` token); empty: every resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// SHA-256 of the secret, hex.
    pub hash: String,
    /// When it was made, Unix ms.
    pub created_at_ms: u64,
    /// Who made it (a token name, or `server` for the first admin token).
    pub created_by: String,
    /// When it stops working, Unix ms; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// When it was revoked, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
}

impl TokenRecord {
    /// The stored bytes (JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and enums: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored token; `None` if the bytes are not one.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// What listings show (no hash).
    pub fn view(&self, now_ms: u64) -> TokenView {
        TokenView {
            id: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            node: self.node.clone(),
            prefixes: self.prefixes.clone(),
            created_at_ms: self.created_at_ms,
            created_by: self.created_by.clone(),
            expires_at_ms: self.expires_at_ms,
            revoked_at_ms: self.revoked_at_ms,
            live: self.live(now_ms),
        }
    }

    fn live(&self, now_ms: u64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|at| now_ms < at)
    }

    /// The principal this token authenticates.
    pub fn principal(&self) -> Principal {
        Principal {
            token: self.id.clone(),
            name: self.name.clone(),
            role: self.role,
            node: self.node.clone(),
            prefixes: self.prefixes.clone(),
        }
    }
}

/// A token as listings show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    /// Its id.
    pub id: String,
    /// Who holds it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The node a `node` token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Resource prefixes it may lock; empty: every resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// When it was made, Unix ms.
    pub created_at_ms: u64,
    /// Who made it.
    pub created_by: String,
    /// When it stops working, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// When it was revoked, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at_ms: Option<u64>,
    /// Whether it works now (not revoked, not expired).
    pub live: bool,
}

/// Who is asking: the authenticated token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Principal {
    /// The token's id.
    pub token: String,
    /// The token's name: the operator name of what it does.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The node it is bound to (a `node` token, or a client certificate's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Resource prefixes it may lock; empty: every resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
}

impl Principal {
    /// Checks the role carries `permission`.
    pub fn allows(&self, permission: Permission) -> Result<(), Forbidden> {
        if self.role.grants(permission) {
            Ok(())
        } else {
            Err(Forbidden::Role {
                name: self.name.clone(),
                role: self.role,
                permission,
                needs: permission.least_role(),
            })
        }
    }

    /// Checks what the request touches is within the principal's prefixes and node.
    pub fn may(&self, access: Access<'_>) -> Result<(), Forbidden> {
        match access {
            Access::Lease {
                resource,
                owner_node,
            } => {
                let within = self.prefixes.is_empty()
                    || self
                        .prefixes
                        .iter()
                        .any(|p| resource.starts_with(p.as_str()));
                if !within {
                    return Err(Forbidden::Prefix {
                        name: self.name.clone(),
                        prefixes: self.prefixes.clone(),
                        resource: resource.to_owned(),
                    });
                }
                match owner_node {
                    Some(node) => self.as_node(node),
                    None => Ok(()),
                }
            }
            Access::Report { node } => self.as_node(node),
        }
    }

    /// Refuses acting for `node` when bound to another one.
    fn as_node(&self, node: &str) -> Result<(), Forbidden> {
        match &self.node {
            Some(bound) if bound != node => Err(Forbidden::Node {
                name: self.name.clone(),
                bound: bound.clone(),
                asked: node.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// Why a presented secret authenticates nobody (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error(
        "no token: send 'Authorization: Bearer lsm_…' (the CLI reads --token, $LOCKSMITH_TOKEN or --token-file)"
    )]
    Missing,
    /// What was presented is not a token's form (`lsm_` and 43 base64url characters).
    #[error("not a Locksmith token (expected 'lsm_' and 43 base64url characters)")]
    Malformed,
    /// No token has that secret.
    #[error("unknown token")]
    Unknown,
    /// The token was revoked.
    #[error("token {id} ({name}) was revoked")]
    Revoked {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
    },
    /// The token's time ran out.
    #[error("token {id} ({name}) expired")]
    Expired {
        /// Its id.
        id: String,
        /// Its name.
        name: String,
    },
}

/// A token to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateToken {
    /// Who will hold it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For a `node` token (required for one, refused for others): its node.
    pub node: Option<String>,
    /// Resource prefixes (a `client` or `node` token); empty: every resource.
    pub prefixes: Vec<String>,
    /// How long it works, ms; `None`: until revoked.
    pub ttl_ms: Option<u64>,
    /// Who makes it.
    pub created_by: String,
}

/// Why a token cannot be made (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidToken {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidToken {
    InvalidToken {
        field,
        reason: reason.into(),
    }
}

/// Why a token cannot be revoked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevokeError {
    /// No token has that id.
    #[error("no token {0}")]
    NotFound(String),
    /// It was revoked already.
    #[error("token {id} was revoked already")]
    AlreadyRevoked {
        /// Its id.
        id: String,
    },
}

/// Every token, by id and by the hash of its secret.
///
/// Persistent maps: a copy shares everything with the table it was made from, so the server
/// copies the table after every change to the tokens for free instead of in time linear in
/// the tokens (10,000 node tokens made one by one cost 10⁸ record copies before), and
/// [`changed_since`](Self::changed_since) tells a copy's holder what changed since an older
/// copy without comparing the two.
#[derive(Debug, Default, Clone)]
pub struct TokenTable {
    tokens: OrdMap<String, Arc<TokenRecord>>,
    by_hash: HashMap<SecretHash, String>,
    /// Each token's id by the revision it last changed at (one entry per token).
    by_change: OrdMap<u64, String>,
    /// The revision each token last changed at.
    changed_at: HashMap<String, u64>,
    last_id: u64,
    /// Bumped by every change: which of two copies of the table is newer.
    revision: u64,
}

impl TokenTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts a stored token back (at boot, or when another server wrote it).
    pub fn restore(&mut self, record: TokenRecord) {
        if let Some(n) = record
            .id
            .strip_prefix("tok-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            self.last_id = self.last_id.max(n);
        }
        if let Some(hash) = SecretHash::from_hex(&record.hash) {
            self.by_hash.insert(hash, record.id.clone());
        }
        self.put(record);
    }

    /// Stores `record` as a change of the next revision.
    fn put(&mut self, record: TokenRecord) {
        self.revision += 1;
        if let Some(before) = self.changed_at.insert(record.id.clone(), self.revision) {
            self.by_change.remove(&before);
        }
        self.by_change.insert(self.revision, record.id.clone());
        self.tokens.insert(record.id.clone(), Arc::new(record));
    }

    /// The tokens made, restored or revoked after revision `revision`, each once, in the
    /// order they last changed: what a copy of revision `revision` lacks.
    pub fn changed_since(&self, revision: u64) -> impl Iterator<Item = &TokenRecord> {
        self.by_change
            .range(revision.saturating_add(1)..)
            .filter_map(|(_, id)| self.tokens.get(id).map(|r| &**r))
    }

    /// How many changes the table has seen (restores, creations, revocations): a copy with a
    /// higher revision is the newer one.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// How many tokens it knows (revoked ones included).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when it knows none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Makes a token whose secret is `random`; returns its record (to store) and its secret
    /// (to hand over once).
    pub fn create(
        &mut self,
        req: CreateToken,
        random: [u8; 32],
        now_ms: u64,
    ) -> Result<(TokenRecord, Secret), InvalidToken> {
        validate(&req)?;
        let secret = Secret::from_random(random);
        let hash = secret.hash();
        if self.by_hash.contains_key(&hash) {
            // 2^-256: only a broken random source gets here.
            return Err(invalid("token", "the random source repeated itself"));
        }
        self.last_id += 1;
        let record = TokenRecord {
            id: format!("tok-{}", self.last_id),
            name: req.name.trim().to_owned(),
            role: req.role,
            node: req.node,
            prefixes: req.prefixes,
            hash: hash.to_hex(),
            created_at_ms: now_ms,
            created_by: req.created_by,
            expires_at_ms: req.ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
            revoked_at_ms: None,
        };
        self.restore(record.clone());
        Ok((record, secret))
    }

    /// Revokes token `id`; returns its record as it is now (to store).
    pub fn revoke(&mut self, id: &str, now_ms: u64) -> Result<TokenRecord, RevokeError> {
        let record = self
            .tokens
            .get(id)
            .ok_or_else(|| RevokeError::NotFound(id.to_owned()))?;
        if record.revoked_at_ms.is_some() {
            return Err(RevokeError::AlreadyRevoked { id: id.to_owned() });
        }
        let revoked = TokenRecord {
            revoked_at_ms: Some(now_ms),
            ..(**record).clone()
        };
        self.put(revoked.clone());
        Ok(revoked)
    }

    /// The principal `presented` authenticates at `now_ms`.
    pub fn authenticate(&self, presented: &str, now_ms: u64) -> Result<Principal, AuthError> {
        self.authenticate_record(presented, now_ms)
            .map(TokenRecord::principal)
    }

    /// The token `presented` authenticates at `now_ms`, borrowed (what a server authenticating
    /// every request uses, to copy nothing).
    pub fn authenticate_record(
        &self,
        presented: &str,
        now_ms: u64,
    ) -> Result<&TokenRecord, AuthError> {
        let presented = presented.trim();
        if !Secret::well_formed(presented) {
            return Err(AuthError::Malformed);
        }
        let hash = hash_secret(presented);
        let record = self
            .by_hash
            .get(&hash)
            .and_then(|id| self.tokens.get(id))
            .ok_or(AuthError::Unknown)?;
        let record: &TokenRecord = record;
        // The map found it by hash; compare the stored hash again in constant time, so that no
        // path through here depends on how much of a wrong secret matched.
        if SecretHash::from_hex(&record.hash) != Some(hash) {
            return Err(AuthError::Unknown);
        }
        if record.revoked_at_ms.is_some() {
            return Err(AuthError::Revoked {
                id: record.id.clone(),
                name: record.name.clone(),
            });
        }
        if !record.live(now_ms) {
            return Err(AuthError::Expired {
                id: record.id.clone(),
                name: record.name.clone(),
            });
        }
        Ok(record)
    }

    /// Every token record, by id.
    pub fn records(&self) -> impl Iterator<Item = &TokenRecord> {
        self.tokens.values().map(|r| &**r)
    }

    /// Whether token `id` still works at `now_ms` (what a long-lived stream or connection
    /// checks).
    pub fn is_live(&self, id: &str, now_ms: u64) -> bool {
        self.tokens.get(id).is_some_and(|r| r.live(now_ms))
    }

    /// One token.
    pub fn get(&self, id: &str) -> Option<&TokenRecord> {
        self.tokens.get(id).map(|r| &**r)
    }

    /// Every token, by id.
    pub fn list(&self, now_ms: u64) -> Vec<TokenView> {
        self.tokens.values().map(|r| r.view(now_ms)).collect()
    }
}

fn validate(req: &CreateToken) -> Result<(), InvalidToken> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            format!("must be 1 to {MAX_NAME} bytes with no control characters"),
        ));
    }
    match (&req.node, req.role) {
        (None, Role::Node) => {
            return Err(invalid(
                "node",
                "a node token must name its node (--node NODE)",
            ));
        }
        (Some(node), Role::Node) if node.trim().is_empty() || node.len() > 255 => {
            return Err(invalid("node", "must be 1 to 255 bytes"));
        }
        (Some(_), role) if role != Role::Node => {
            return Err(invalid(
                "node",
                format!("only a node token is bound to a node (this one has role {role})"),
            ));
        }
        _ => {}
    }
    if !req.prefixes.is_empty() && !matches!(req.role, Role::Client | Role::Node) {
        return Err(invalid(
            "prefix",
            format!(
                "only client and node tokens are limited to prefixes (role {} locks anywhere it may)",
                req.role
            ),
        ));
    }
    if req.prefixes.len() > MAX_PREFIXES {
        return Err(invalid(
            "prefix",
            format!("at most {MAX_PREFIXES} prefixes"),
        ));
    }
    if let Some(bad) = req
        .prefixes
        .iter()
        .find(|p| p.is_empty() || p.len() > 255 || p.chars().any(char::is_control))
    {
        return Err(invalid(
            "prefix",
            format!("{bad:?} is not a prefix (1 to 255 bytes, no control characters)"),
        ));
    }
    if req.ttl_ms == Some(0) {
        return Err(invalid("ttl", "must be more than 0"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(table: &mut TokenTable, name: &str, role: Role, seed: u8) -> (TokenRecord, Secret) {
        table
            .create(
                CreateToken {
                    name: name.into(),
                    role,
                    node: (role == Role::Node).then(|| "node-7".to_owned()),
                    prefixes: Vec::new(),
                    ttl_ms: None,
                    created_by: "server".into(),
                },
                [seed; 32],
                1_000,
            )
            .expect("create")
    }

    #[test]
    fn a_secret_authenticates_its_principal_until_revoked() {
        let mut table = TokenTable::new();
        let (record, secret) = make(&mut table, "alice", Role::Operator, 1);
        assert_eq!(record.id, "tok-1");
        assert!(!record.hash.contains(&secret.expose()[4..]));
        let who = table.authenticate(secret.expose(), 2_000).expect("valid");
        assert_eq!((who.name.as_str(), who.role), ("alice", Role::Operator));
        table.revoke("tok-1", 3_000).expect("revoke");
        assert!(matches!(
            table.authenticate(secret.expose(), 3_000),
            Err(AuthError::Revoked { .. })
        ));
        assert!(!table.is_live("tok-1", 3_000));
        assert!(matches!(
            table.revoke("tok-1", 4_000),
            Err(RevokeError::AlreadyRevoked { .. })
        ));
    }

    #[test]
    fn an_expired_token_authenticates_nobody() {
        let mut table = TokenTable::new();
        let (_, secret) = table
            .create(
                CreateToken {
                    name: "ci".into(),
                    role: Role::Client,
                    node: None,
                    prefixes: vec!["ci/".into()],
                    ttl_ms: Some(500),
                    created_by: "alice".into(),
                },
                [2; 32],
                1_000,
            )
            .expect("create");
        assert!(table.authenticate(secret.expose(), 1_499).is_ok());
        assert!(matches!(
            table.authenticate(secret.expose(), 1_500),
            Err(AuthError::Expired { .. })
        ));
    }

    #[test]
    fn bad_secrets_are_malformed_or_unknown() {
        let mut table = TokenTable::new();
        let (_, secret) = make(&mut table, "bob", Role::Reader, 3);
        let other = Secret::from_random([4; 32]);
        assert_eq!(
            table.authenticate(other.expose(), 0),
            Err(AuthError::Unknown)
        );
        for bad in ["", "Bearer", &secret.expose()[..20], &"x".repeat(10_240)] {
            assert_eq!(
                table.authenticate(bad, 0),
                Err(AuthError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn restored_tokens_authenticate_and_ids_continue_after_them() {
        let mut table = TokenTable::new();
        let (record, secret) = make(&mut table, "alice", Role::Admin, 5);
        let mut again = TokenTable::new();
        again.restore(TokenRecord::from_bytes(&record.to_bytes()).expect("decode"));
        assert!(again.authenticate(secret.expose(), 0).is_ok());
        let (next, _) = make(&mut again, "bob", Role::Reader, 6);
        assert_eq!(next.id, "tok-2");
    }

    #[test]
    fn roles_grant_exactly_their_permissions() {
        use Permission as P;
        let table = [
            (Role::Reader, [true, true, false, false, false, false]),
            (Role::Client, [true, true, true, false, false, false]),
            (Role::Node, [true, true, true, true, false, false]),
            (Role::Operator, [true, true, true, true, true, false]),
            (Role::Admin, [true, true, true, true, true, true]),
        ];
        for (role, grants) in table {
            for (permission, granted) in [
                P::Anonymous,
                P::Read,
                P::Lease,
                P::Report,
                P::Operate,
                P::Admin,
            ]
            .into_iter()
            .zip(grants)
            {
                assert_eq!(role.grants(permission), granted, "{role} {permission:?}");
            }
        }
        assert_eq!(P::Operate.least_role(), Role::Operator);
    }

    #[test]
    fn a_node_token_acts_only_for_its_node_and_prefixes() {
        let who = Principal {
            token: "tok-9".into(),
            name: "agent@node-7".into(),
            role: Role::Node,
            node: Some("node-7".into()),
            prefixes: vec!["configs/".into()],
        };
        let lease = |resource, node| Access::Lease {
            resource,
            owner_node: Some(node),
        };
        assert!(who.may(lease("configs/a.conf", "node-7")).is_ok());
        assert!(matches!(
            who.may(lease("configs/a.conf", "node-8")),
            Err(Forbidden::Node { .. })
        ));
        assert!(matches!(
            who.may(lease("reboot/default", "node-7")),
            Err(Forbidden::Prefix { .. })
        ));
        assert!(who.may(Access::Report { node: "node-7" }).is_ok());
        assert!(who.may(Access::Report { node: "node-8" }).is_err());
        assert!(matches!(
            who.allows(Permission::Operate),
            Err(Forbidden::Role {
                needs: Role::Operator,
                ..
            })
        ));
    }

    #[test]
    fn token_requests_are_validated() {
        let mut table = TokenTable::new();
        let base = CreateToken {
            name: "x".into(),
            role: Role::Client,
            node: None,
            prefixes: Vec::new(),
            ttl_ms: None,
            created_by: "server".into(),
        };
        for (bad, field) in [
            (
                CreateToken {
                    name: " ".into(),
                    ..base.clone()
                },
                "name",
            ),
            (
                CreateToken {
                    role: Role::Node,
                    ..base.clone()
                },
                "node",
            ),
            (
                CreateToken {
                    node: Some("n".into()),
                    ..base.clone()
                },
                "node",
            ),
            (
                CreateToken {
                    role: Role::Operator,
                    prefixes: vec!["a/".into()],
                    ..base.clone()
                },
                "prefix",
            ),
            (
                CreateToken {
                    ttl_ms: Some(0),
                    ..base.clone()
                },
                "ttl",
            ),
        ] {
            assert_eq!(
                table
                    .create(bad, [9; 32], 0)
                    .map(|_| ())
                    .map_err(|e| e.field),
                Err(field)
            );
        }
        assert!(table.is_empty());
    }

    #[test]
    fn a_copy_shares_the_table_and_learns_only_what_changed_since_it() {
        let mut table = TokenTable::new();
        make(&mut table, "alice", Role::Operator, 1);
        let copy = table.clone();
        make(&mut table, "bob", Role::Reader, 2);
        make(&mut table, "carol", Role::Reader, 3);
        table.revoke("tok-2", 2_000).expect("revoke bob");
        table.revoke("tok-1", 2_000).expect("revoke alice");

        // The copy is untouched by changes after it.
        assert_eq!(copy.len(), 1);
        assert!(copy.is_live("tok-1", 2_000));
        // Each changed token once, in the order it last changed; nothing the copy has.
        let changed: Vec<(&str, bool)> = table
            .changed_since(copy.revision())
            .map(|r| (r.id.as_str(), r.revoked_at_ms.is_some()))
            .collect();
        assert_eq!(
            changed,
            vec![("tok-3", false), ("tok-2", true), ("tok-1", true)]
        );
        assert_eq!(table.changed_since(table.revision()).count(), 0);
        assert_eq!(table.changed_since(0).count(), 3);
    }
}
