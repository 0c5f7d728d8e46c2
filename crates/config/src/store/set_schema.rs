//! Setting a config's schema.

use super::current::{check_stored, verify};
use super::error::SetSchemaError;
use super::records::{Author, HEADS, Head, SCHEMAS, SchemaRef, encode};
use super::{Applied, Config, Configs, EVENT_SCHEMA_SET, MAX_SCHEMA_BYTES, event, put};
use crate::format::Format;
use crate::name::validate_name;
use crate::schema::Schema;

impl Configs {
    /// Sets the schema of `name` (creating the config if it has no revision yet). Refused if
    /// the current revision fails it — `current` is the current revision's content, which
    /// the caller read from its blob (`None` when there is no current revision) — so the
    /// current revision always passes the schema in force. Drafts are not checked: a
    /// promotion checks them against the schema in force then.
    pub fn set_schema(
        &mut self,
        name: &str,
        schema: &[u8],
        current: Option<&[u8]>,
        by: &Author,
        now_ms: u64,
    ) -> Result<Applied<Head>, SetSchemaError> {
        validate_name(name)?;
        if schema.len() > MAX_SCHEMA_BYTES {
            return Err(SetSchemaError::TooLarge {
                size: schema.len(),
                max: MAX_SCHEMA_BYTES,
            });
        }
        let compiled = Schema::compile(schema)?;
        if let Some(config) = self.configs.get(name) {
            if config.head.format == Some(Format::Raw) {
                return Err(SetSchemaError::RawConfig {
                    name: name.to_owned(),
                });
            }
            if let Some(meta) = config.head.current.and_then(|rev| config.revision(rev)) {
                verify(meta, current.unwrap_or_default())?;
                let violations = check_stored(&compiled, meta.format, current.unwrap_or_default());
                if !violations.is_empty() {
                    return Err(SetSchemaError::CurrentFails {
                        name: name.to_owned(),
                        rev: meta.rev,
                        violations,
                    });
                }
            }
        }
        let config = self
            .configs
            .entry(name.to_owned())
            .or_insert_with(|| Config::empty(name));
        let reference = SchemaRef {
            sha256: compiled.sha256().to_owned(),
            set_at_ms: now_ms,
            by: by.clone(),
        };
        config.head.schema = Some(reference.clone());
        config.schema = Some(compiled);
        let head = config.head.clone();
        let mutations = vec![
            put(SCHEMAS, name.to_owned(), schema.to_vec()),
            put(HEADS, name.to_owned(), encode(&head)),
        ];
        let detail = serde_json::json!({ "name": name, "schema": reference });
        Ok(Applied {
            value: head,
            mutations,
            event: event(EVENT_SCHEMA_SET, detail),
        })
    }
}
