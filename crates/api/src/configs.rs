//! Bodies of the config API (`/v1/configs`): versioned configs that only the holder of the lock
//! `configs/NAME` writes.
//!
//! A config's name may contain `/` (`fleet/aim_lock_config.conf`); in a URL path it is one
//! segment, with each `/` written `%2F` (`/v1/configs/fleet%2Faim_lock_config.conf/revisions`).
//! Content travels as `content` (UTF-8 text) or `content_base64` (any bytes: the `raw` format,
//! or text a client prefers not to re-encode) — exactly one of them in a request; an answer
//! carries `content` when the bytes are UTF-8, else `content_base64`.

use serde::{Deserialize, Serialize};

pub use locksmith_config::{
    Author, Format, Head, ParseError, RevisionKind, RevisionMeta, SchemaRef, Violation,
};

/// Content in a request or an answer: text, or base64 of any bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Content {
    /// The content as UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The content as standard base64 (with padding), for bytes that are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// The lease a fenced change is made under: it lands only if `token` is the current holder's
/// fencing token of `configs/NAME` when the change commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Fence {
    /// The lease on `configs/NAME`.
    pub lease: u64,
    /// Its fencing token.
    pub token: u64,
}

/// `PUT /v1/configs/{name}`: write a new revision (or a draft).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WriteConfigRequest {
    /// The lease on `configs/NAME` and its token.
    #[serde(flatten)]
    pub fence: Fence,
    /// The content's format; must equal the config's once it has a revision.
    pub format: Format,
    /// The content.
    #[serde(flatten)]
    pub content: Content,
    /// Why (shown in history and audit), up to 4 KiB.
    #[serde(default)]
    pub message: String,
    /// Store it as a draft: readable, diffable, not current until promoted.
    #[serde(default)]
    pub draft: bool,
}

/// `POST /v1/configs/{name}/validate`: the checks of a write, without writing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ValidateConfigRequest {
    /// The content's format.
    pub format: Format,
    /// The content.
    #[serde(flatten)]
    pub content: Content,
}

/// The answer to a validation that passed (a failed one is the `invalid_config` error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateConfigResponse {
    /// The config.
    pub name: String,
    /// Always true: a refusal is an error.
    pub valid: bool,
    /// Whether a schema was checked (false: only the format's parse).
    pub schema_checked: bool,
    /// The SHA-256 the content would be stored under.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// `POST /v1/configs/{name}/promote`: make draft `rev` current (a new revision with its
/// content, kind `promoted`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PromoteConfigRequest {
    /// The lease on `configs/NAME` and its token.
    #[serde(flatten)]
    pub fence: Fence,
    /// The draft to promote.
    pub rev: u64,
    /// Why.
    #[serde(default)]
    pub message: String,
}

/// `POST /v1/configs/{name}/rollback`: a new current revision with revision `to`'s content
/// (kind `rolled_back`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RollbackConfigRequest {
    /// The lease on `configs/NAME` and its token.
    #[serde(flatten)]
    pub fence: Fence,
    /// The revision whose content becomes current again.
    pub to: u64,
    /// Why.
    #[serde(default)]
    pub message: String,
}

/// `PUT /v1/configs/{name}/schema`: the JSON Schema every later revision must pass (refused,
/// with the violations, if the current revision does not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetSchemaRequest {
    /// The schema: a JSON Schema document (draft 2020-12 unless `$schema` says otherwise).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: serde_json::Value,
}

/// `GET`/`PUT /v1/configs/{name}/schema`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchemaView {
    /// The config.
    pub name: String,
    /// When and by whom it was set, and its SHA-256.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub set: SchemaRef,
    /// The schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schema: serde_json::Value,
}

/// One revision, with its content: `GET /v1/configs/{name}` (the current one),
/// `GET /v1/configs/{name}/revisions/{rev}`, and the answer to every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevisionView {
    /// What the revision is.
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub meta: RevisionMeta,
    /// Whether it is the config's current revision.
    pub current: bool,
    /// The content (with `?stamp=true`, the provenance line first, for formats with comments).
    #[serde(flatten)]
    pub content: Content,
}

/// `GET /v1/configs/{name}/revisions`: the history, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryResponse {
    /// Where the config stands.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub head: Head,
    /// Every revision's metadata (no content).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub revisions: Vec<RevisionMeta>,
}

/// `GET /v1/configs`: every config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigsResponse {
    /// One line per config, by name.
    pub configs: Vec<ConfigSummary>,
}

/// A config in the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConfigSummary {
    /// Where it stands (name, format, current, latest, schema).
    #[serde(flatten)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub head: Head,
    /// The current revision's metadata, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub current_revision: Option<RevisionMeta>,
}

/// `GET /v1/configs/{name}/diff?from=A&to=B`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiffResponse {
    /// The config.
    pub name: String,
    /// The older side.
    pub from: u64,
    /// The newer side.
    pub to: u64,
    /// A unified diff (`--- NAME rev A` / `+++ NAME rev B`, 3 lines of context); empty when
    /// the contents are equal.
    pub diff: String,
}
