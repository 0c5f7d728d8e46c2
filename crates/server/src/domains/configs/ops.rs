//! The configs' request functions: typed request in, typed answer or [`ApiError`] out.
//!
//! Fenced changes (put, promote, rollback) need the principal's leave to hold `configs/NAME`
//! (its prefixes), and the lease's token checked in the engine's step. Reads see the durable
//! state; content is read from the store by its SHA-256.

use base64::Engine as _;
use locksmith_api::configs::{
    ConfigSummary, ConfigsResponse, Content, DiffResponse, Fence, HistoryResponse,
    PromoteConfigRequest, RevisionView, RollbackConfigRequest, SchemaView, SetSchemaRequest,
    ValidateConfigRequest, ValidateConfigResponse, WriteConfigRequest,
};
use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_auth::{Access, Principal};
use locksmith_config::{
    RevisionMeta, StampInfo, WriteError, resource_of, sha256_hex, stamp, validate_name,
};
use locksmith_core::{FenceToken, LeaseId};

use super::errors::{bad_name, config_not_found, revision_not_found};
use crate::app::App;
use crate::engine::{ConfigWrite, EngineError, FenceArg};
use crate::request::{ApiError, Refusal, forbidden, valid_id};

/// How often a schema set reads the current content again when another revision became
/// current between its read and its step.
const SCHEMA_RETRIES: usize = 5;

/// `name` if it is a config name, else `invalid_request` on `name`.
fn checked(name: &str) -> Result<&str, ApiError> {
    validate_name(name).map_err(|e| ApiError::from(bad_name(&e)))?;
    Ok(name)
}

/// 403 unless `who` may hold `configs/NAME` (its prefixes).
fn may_write(who: &Principal, name: &str) -> Result<(), ApiError> {
    who.may(Access::Lease {
        resource: &resource_of(name),
        owner_node: None,
    })
    .map_err(|e| forbidden(&e))
}

fn fence_of(fence: Fence) -> Result<FenceArg, ApiError> {
    Ok(FenceArg {
        lease: LeaseId(valid_id("lease", fence.lease)?),
        token: FenceToken(fence.token),
    })
}

/// The bytes of a request's content: exactly one of `content` and `content_base64`.
fn bytes_of(content: Content) -> Result<Vec<u8>, ApiError> {
    match (content.content, content.content_base64) {
        (Some(text), None) => Ok(text.into_bytes()),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| {
                ApiError::from(ErrorBody::invalid(
                    "content_base64",
                    format!("is not standard base64 with padding: {e}"),
                ))
            }),
        _ => Err(ApiError::from(ErrorBody::invalid(
            "content",
            "must be given exactly once: as `content` (UTF-8 text) or `content_base64`",
        ))),
    }
}

/// Content for an answer: text when it is UTF-8, else base64.
pub(crate) fn content_of(bytes: Vec<u8>) -> Content {
    match String::from_utf8(bytes) {
        Ok(text) => Content {
            content: Some(text),
            content_base64: None,
        },
        Err(e) => Content {
            content: None,
            content_base64: Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
        },
    }
}

/// A refusal of a change to `name`, counted, with the config named in its message.
fn refused<E: Refusal>(app: &App, op: &'static str, name: &str, e: EngineError<E>) -> ApiError {
    let ApiError(mut body) = ApiError::from(e);
    app.engine
        .metrics()
        .count_config_refusal(op, body.error.as_str());
    name_it(&mut body, name);
    ApiError(body)
}

/// Makes sure an error body names the config (a parse error knows only its line).
fn name_it(body: &mut ErrorBody, name: &str) {
    if !body.message.contains(name) {
        body.message = format!("{name}: {}", body.message);
    }
    if body.resource.is_none() {
        body.resource = Some(name.to_owned());
    }
}

/// The content of revision `meta`, from the store.
pub(crate) async fn blob(app: &App, meta: &RevisionMeta) -> Result<Vec<u8>, ApiError> {
    app.engine.config_blob(&meta.sha256).await?.ok_or_else(|| {
        ApiError::from(ErrorBody::new(
            ErrorCode::Internal,
            format!(
                "{} rev {}: the store has no content with sha256 {}, which the revision names; \
                 the store is damaged — report it with the server log",
                meta.name, meta.rev, meta.sha256
            ),
        ))
    })
}

/// The view of `meta` with its content (stamped, if asked and the format has comments).
async fn view(
    app: &App,
    meta: RevisionMeta,
    current: bool,
    stamped: bool,
) -> Result<RevisionView, ApiError> {
    let mut bytes = blob(app, &meta).await?;
    if stamped {
        let info = StampInfo {
            name: meta.name.clone(),
            rev: meta.rev,
            author: meta.author.name.clone(),
            node: meta.owner_node.clone(),
            at_ms: meta.at_ms,
            token: meta.token,
            sha256: meta.sha256.clone(),
        };
        if let Some(line) = stamp(meta.format, &info) {
            let mut stamped = Vec::with_capacity(line.len() + 1 + bytes.len());
            stamped.extend_from_slice(line.as_bytes());
            stamped.push(b'\n');
            stamped.extend_from_slice(&bytes);
            bytes = stamped;
        }
    }
    Ok(RevisionView {
        meta,
        current,
        content: content_of(bytes),
    })
}

/// Every config, by name.
pub async fn list(app: &App) -> Result<ConfigsResponse, ApiError> {
    let configs = app
        .engine
        .configs(|c| {
            c.list()
                .map(|head| ConfigSummary {
                    head: head.clone(),
                    current_revision: c.current(&head.name).cloned(),
                })
                .collect()
        })
        .await?;
    Ok(ConfigsResponse { configs })
}

/// Revision `rev` of `name`, or its current revision.
pub async fn get(
    app: &App,
    name: &str,
    rev: Option<u64>,
    stamped: bool,
) -> Result<RevisionView, ApiError> {
    let name = checked(name)?;
    let found = app
        .engine
        .configs(|c| {
            let head = c.head(name)?;
            let meta = match rev {
                Some(rev) => c.revision(name, rev).cloned(),
                None => c.current(name).cloned(),
            };
            Some((meta, head.current))
        })
        .await?;
    let Some((meta, current)) = found else {
        return Err(ApiError::from(config_not_found(name)));
    };
    let meta = meta.ok_or_else(|| match rev {
        Some(rev) => ApiError::from(revision_not_found(name, rev)),
        None => ApiError::from(ErrorBody {
            resource: Some(name.to_owned()),
            ..ErrorBody::new(
                ErrorCode::RevisionNotFound,
                format!(
                    "{name} has no current revision (only drafts, or only a schema); \
                     'locksmith config history {name}' lists its revisions"
                ),
            )
        }),
    })?;
    let is_current = current == Some(meta.rev);
    view(app, meta, is_current, stamped).await
}

/// Writes a revision (or a draft) of `name` under the request's lease.
pub async fn put(
    app: &App,
    who: &Principal,
    name: &str,
    req: WriteConfigRequest,
) -> Result<RevisionView, ApiError> {
    let name = checked(name)?;
    may_write(who, name)?;
    let fence = fence_of(req.fence)?;
    let content = bytes_of(req.content)?;
    let write = ConfigWrite {
        name: name.to_owned(),
        format: req.format,
        content,
        message: req.message,
        draft: req.draft,
        max_bytes: app.settings.max_config_bytes,
    };
    let meta = app
        .engine_for(who)
        .config_write(write, fence)
        .await
        .map_err(|e| refused(app, "write", name, e))?;
    let current = !meta.draft;
    view(app, meta, current, false).await
}

/// Every revision of `name`, oldest first.
pub async fn history(app: &App, name: &str) -> Result<HistoryResponse, ApiError> {
    let name = checked(name)?;
    app.engine
        .configs(|c| {
            c.head(name).map(|head| HistoryResponse {
                head: head.clone(),
                revisions: c.revisions(name).to_vec(),
            })
        })
        .await?
        .ok_or_else(|| ApiError::from(config_not_found(name)))
}

/// A unified diff of revisions `from` and `to` of `name`.
pub async fn diff(app: &App, name: &str, from: u64, to: u64) -> Result<DiffResponse, ApiError> {
    let name = checked(name)?;
    let found = app
        .engine
        .configs(|c| {
            c.head(name)?;
            Some((
                c.revision(name, from).cloned(),
                c.revision(name, to).cloned(),
            ))
        })
        .await?
        .ok_or_else(|| ApiError::from(config_not_found(name)))?;
    let a = found
        .0
        .ok_or_else(|| ApiError::from(revision_not_found(name, from)))?;
    let b = found
        .1
        .ok_or_else(|| ApiError::from(revision_not_found(name, to)))?;
    let (a_bytes, b_bytes) = (blob(app, &a).await?, blob(app, &b).await?);
    Ok(DiffResponse {
        name: name.to_owned(),
        from,
        to,
        diff: locksmith_config::diff(
            &format!("{name} rev {from}"),
            &a_bytes,
            &format!("{name} rev {to}"),
            &b_bytes,
        ),
    })
}

/// The checks of a write to `name`, without writing.
pub async fn validate(
    app: &App,
    name: &str,
    req: ValidateConfigRequest,
) -> Result<ValidateConfigResponse, ApiError> {
    let name = checked(name)?;
    let content = bytes_of(req.content)?;
    let max = app.settings.max_config_bytes;
    let (checked, schema_checked) = app
        .engine
        .configs(|c| {
            let schema = c.schema(name).is_some();
            (
                c.validate(name, req.format, &content, max).map(|_| ()),
                schema,
            )
        })
        .await?;
    checked.map_err(|e: WriteError| {
        let mut body = e.body();
        name_it(&mut body, name);
        ApiError::from(body)
    })?;
    Ok(ValidateConfigResponse {
        name: name.to_owned(),
        valid: true,
        schema_checked,
        sha256: sha256_hex(&content),
        size: content.len() as u64,
    })
}

/// The revision `rev` of `name`, to promote or roll back to: its metadata and content, or
/// why not.
async fn target(app: &App, name: &str, rev: u64) -> Result<(RevisionMeta, Vec<u8>), ApiError> {
    let found = app
        .engine
        .configs(|c| c.head(name).map(|_| c.revision(name, rev).cloned()))
        .await?
        .ok_or_else(|| ApiError::from(config_not_found(name)))?;
    let meta = found.ok_or_else(|| ApiError::from(revision_not_found(name, rev)))?;
    let content = blob(app, &meta).await?;
    Ok((meta, content))
}

/// Makes draft `rev` of `name` current, under the request's lease.
pub async fn promote(
    app: &App,
    who: &Principal,
    name: &str,
    req: PromoteConfigRequest,
) -> Result<RevisionView, ApiError> {
    let name = checked(name)?;
    may_write(who, name)?;
    let fence = fence_of(req.fence)?;
    let (_, content) = target(app, name, req.rev).await?;
    let meta = app
        .engine_for(who)
        .config_promote(name, req.rev, content, req.message, fence)
        .await
        .map_err(|e| refused(app, "promote", name, e))?;
    view(app, meta, true, false).await
}

/// Makes revision `to`'s content of `name` current again, under the request's lease.
pub async fn rollback(
    app: &App,
    who: &Principal,
    name: &str,
    req: RollbackConfigRequest,
) -> Result<RevisionView, ApiError> {
    let name = checked(name)?;
    may_write(who, name)?;
    let fence = fence_of(req.fence)?;
    let (_, content) = target(app, name, req.to).await?;
    let meta = app
        .engine_for(who)
        .config_rollback(name, req.to, content, req.message, fence)
        .await
        .map_err(|e| refused(app, "rollback", name, e))?;
    view(app, meta, true, false).await
}

/// The schema in force for `name`.
pub async fn schema(app: &App, name: &str) -> Result<SchemaView, ApiError> {
    let name = checked(name)?;
    for _ in 0..SCHEMA_RETRIES {
        let set = app
            .engine
            .configs(|c| c.head(name).map(|h| h.schema.clone()))
            .await?
            .ok_or_else(|| ApiError::from(config_not_found(name)))?
            .ok_or_else(|| {
                ApiError::from(ErrorBody {
                    resource: Some(name.to_owned()),
                    ..ErrorBody::new(
                        ErrorCode::ConfigNotFound,
                        format!(
                            "{name} has no schema; set one with \
                             'locksmith config schema set {name} SCHEMA.json'"
                        ),
                    )
                })
            })?;
        let bytes = app
            .engine
            .config_record(locksmith_config::store::SCHEMAS, name)
            .await?
            .unwrap_or_default();
        // Set again between the two reads: read both again.
        if sha256_hex(&bytes) != set.sha256 {
            continue;
        }
        let schema = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::from(ErrorBody::new(
                ErrorCode::Internal,
                format!(
                    "{name}: the stored schema is not JSON ({e}); report it with the server log"
                ),
            ))
        })?;
        return Ok(SchemaView {
            name: name.to_owned(),
            set,
            schema,
        });
    }
    Err(busy(name))
}

fn busy(name: &str) -> ApiError {
    ApiError::from(ErrorBody {
        resource: Some(name.to_owned()),
        ..ErrorBody::new(
            ErrorCode::Internal,
            format!("{name} kept changing while it was read; retry"),
        )
    })
}

/// Sets the schema of `name` (refused if the current revision fails it).
pub async fn set_schema(
    app: &App,
    who: &Principal,
    name: &str,
    req: SetSchemaRequest,
) -> Result<SchemaView, ApiError> {
    let name = checked(name)?;
    let bytes = serde_json::to_vec(&req.schema).map_err(|e| {
        ApiError::from(ErrorBody::invalid(
            "schema",
            format!("cannot be encoded: {e}"),
        ))
    })?;
    for _ in 0..SCHEMA_RETRIES {
        let current = app.engine.configs(|c| c.current(name).cloned()).await?;
        let content = match &current {
            Some(meta) => Some(blob(app, meta).await?),
            None => None,
        };
        match app
            .engine_for(who)
            .config_set_schema(name, bytes.clone(), content)
            .await
        {
            Ok(head) => {
                let set = head.schema.ok_or_else(|| busy(name))?;
                return Ok(SchemaView {
                    name: name.to_owned(),
                    set,
                    schema: req.schema,
                });
            }
            // Another revision became current between the read and the step: read it again.
            Err(EngineError::Refused(locksmith_config::SetSchemaError::WrongContent(_))) => {}
            Err(e) => return Err(refused(app, "schema", name, e)),
        }
    }
    Err(busy(name))
}
