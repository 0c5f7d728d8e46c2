//! Roles, the permission every route declares, and what a principal may touch.

use serde::{Deserialize, Serialize};

/// What a token may do, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every read (listings, audit, events, status).
    Reader,
    /// A reader that also takes, renews, releases and fence-checks locks under its prefixes.
    Client,
    /// A client bound to one node: it acquires only as an owner on that node, reports liveness
    /// only for it, and (agents, next) sees and reports only its own state.
    Node,
    /// A reader that also freezes, acknowledges, lifts and breaks (configs and rollouts next),
    /// and takes locks anywhere (an operator's manual change is made under the lock too).
    Operator,
    /// Everything, including managing tokens.
    Admin,
}

impl Role {
    /// Every role, least powerful first.
    pub const ALL: [Role; 5] = [
        Role::Reader,
        Role::Client,
        Role::Node,
        Role::Operator,
        Role::Admin,
    ];

    /// Its name, as the API and the CLI write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Client => "client",
            Role::Node => "node",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Parses a role's name.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether the role carries `permission` — the one table of every role's powers.
    pub fn grants(self, permission: Permission) -> bool {
        use Permission as P;
        match permission {
            P::Anonymous | P::Read => true,
            P::Lease => matches!(
                self,
                Role::Client | Role::Node | Role::Operator | Role::Admin
            ),
            P::Report => matches!(self, Role::Node | Role::Operator | Role::Admin),
            P::Operate => matches!(self, Role::Operator | Role::Admin),
            P::Admin => self == Role::Admin,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route requires: every route of the server declares one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// No token needed: `/healthz`, `/metrics` (unless `--metrics-auth`), the OpenAPI document,
    /// and FleetLock (Zincati sends no credentials; it can only touch `reboot/` groups).
    Anonymous,
    /// Any valid token: every read.
    Read,
    /// Take, renew, release and fence-check locks (the target's prefix and node checked too).
    Lease,
    /// Report the liveness of holders on a node (the node checked too).
    Report,
    /// Holds, acknowledgements, lifts and breaks.
    Operate,
    /// Token management.
    Admin,
}

impl Permission {
    /// Its name, as error messages write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Anonymous => "anonymous",
            Permission::Read => "read",
            Permission::Lease => "lease",
            Permission::Report => "report",
            Permission::Operate => "operate",
            Permission::Admin => "admin",
        }
    }

    /// The least powerful role that carries it.
    pub fn least_role(self) -> Role {
        Role::ALL
            .into_iter()
            .find(|r| r.grants(self))
            .unwrap_or(Role::Admin)
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request touches, checked against a principal's prefixes and node beyond the route's
/// permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// A lock on `resource`, taken or held by an owner on `owner_node` (`None` when the request
    /// names no owner: renew, release and fence checks name a lease or a token).
    Lease {
        /// The resource.
        resource: &'a str,
        /// The owner's node, for an acquire.
        owner_node: Option<&'a str>,
    },
    /// A liveness report from `node`.
    Report {
        /// The reporting node.
        node: &'a str,
    },
}

/// Why a principal may not do something: what is missing, for a 403 that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// The role does not carry the permission.
    #[error("token {name:?} has role {role}, and {permission} needs role {needs} or above")]
    Role {
        /// The token's name.
        name: String,
        /// Its role.
        role: Role,
        /// What the route needs.
        permission: Permission,
        /// The least role that has it.
        needs: Role,
    },
    /// The resource is outside the token's prefixes.
    #[error("token {name:?} may only lock resources under {prefixes:?}, not {resource:?}")]
    Prefix {
        /// The token's name.
        name: String,
        /// Its prefixes.
        prefixes: Vec<String>,
        /// The resource asked for.
        resource: String,
    },
    /// A lease acquired with another token: only that token, or one that may operate
    /// (`locksmith break`), may renew or release it.
    #[error(
        "lease {lease} was acquired with another token ({acquired_by}); token {name:?} may not \
         renew or release it — its holder does, or an operator breaks it ('locksmith break')"
    )]
    NotAcquirer {
        /// The token's name.
        name: String,
        /// The lease.
        lease: u64,
        /// The token that acquired it (`name (tok-3)`).
        acquired_by: String,
    },
    /// A node-bound principal acted for another node.
    #[error("token {name:?} is bound to node {bound:?} and cannot act for node {asked:?}")]
    Node {
        /// The token's name.
        name: String,
        /// The node it is bound to.
        bound: String,
        /// The node the request names.
        asked: String,
    },
}
