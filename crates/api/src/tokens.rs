//! Bodies of the token API (`/v1/tokens`, admin only) and the identity types the API shows.

use serde::{Deserialize, Serialize};

pub use locksmith_auth::{Principal, Role, TokenView};

/// `POST /v1/tokens`: make a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Who will hold it (a person, a service, a node's agent): the operator name of every hold,
    /// acknowledgement and break made with it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The node a `node` token is bound to (required for one, refused for others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Resource prefixes a `client` or `node` token may lock; none: every resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// How long it works, ms; absent: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// A token just made: the only answer that ever carries its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    /// Its id (`tok-12`): what listings, revocation and audit records name.
    pub id: String,
    /// Who holds it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The node it is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Resource prefixes it may lock; empty: every resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// The secret (`lsm_…`), shown this once: the server keeps only its hash.
    pub token: String,
    /// When it was made, Unix ms.
    pub created_at_ms: u64,
    /// Who made it.
    pub created_by: String,
    /// When it stops working, Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokensResponse {
    /// Every token, revoked ones included, by id.
    pub tokens: Vec<TokenView>,
}
