//! Checking configs: `config schema set|get`, `config validate`, and how an invalid file's
//! problems read — one per line, each with where it is:
//! `aim_lock_config.conf: INVALID — safety_threshold: 1.7 is greater than the maximum of 1 (line 4)`.

use std::path::Path;

use locksmith_api::ErrorBody;
use locksmith_api::configs::{SetSchemaRequest, ValidateConfigRequest};
use serde::Serialize;

use super::{choose_format, client_for, ctx, failure, read_file};
use crate::cli::{ConfigNameArgs, ConfigSchemaSetArgs, ConfigValidateArgs, Global};
use crate::exit::Exit;
use crate::failure::Failure;
use crate::output::{out, out_json};

pub async fn schema_set(global: &Global, args: ConfigSchemaSetArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let client = client_for(global, name)?;
    let bytes = read_file(name, &args.schema)?;
    // A schema that is not JSON is refused here, with where: the server would only say the
    // request body is malformed.
    let schema: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::new(
            Exit::Other,
            name,
            &format!("invalid schema {}", args.schema.display()),
            format!("line {}, column {}: {e}", e.line(), e.column()),
            "a schema is one JSON Schema document; fix the file and set it again",
        )
    })?;
    let set = client
        .set_config_schema(name, &SetSchemaRequest { schema })
        .await
        .map_err(|e| failure(&e, name, None))?;
    if args.json {
        out_json(&set)?;
    } else {
        let sha: String = set.set.sha256.chars().take(12).collect();
        out(&format!(
            "{name}: schema set (sha256 {sha}) by {}; every later revision must pass it \
             (check a file first with 'locksmith config validate {name} FILE')",
            set.set.by.name
        ))?;
    }
    Ok(Exit::Ok)
}

pub async fn schema_get(global: &Global, args: ConfigNameArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let got = client_for(global, name)?
        .config_schema(name)
        .await
        .map_err(|e| Failure::from_client(&e, ctx(name)))?;
    if args.json {
        out_json(&got)?;
    } else {
        // The document itself, so that `schema get A > s.json; schema set B s.json` copies it.
        out_json(&got.schema)?;
    }
    Ok(Exit::Ok)
}

/// `config validate --json`'s answer for a file that fails: the verdict and the problems.
#[derive(Debug, Serialize)]
struct Invalid<'a> {
    name: &'a str,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    parse_error: Option<&'a locksmith_config::ParseError>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    violations: &'a [locksmith_config::Violation],
    message: &'a str,
}

pub async fn validate(global: &Global, args: ConfigValidateArgs) -> anyhow::Result<Exit> {
    let name = args.name.as_str();
    let client = client_for(global, name)?;
    let bytes = read_file(name, &args.file)?;
    let format = choose_format(&client, name, &args.file, args.format).await?;
    let req = ValidateConfigRequest {
        format,
        content: locksmith_client::configs::content_of(bytes),
    };
    let file = args.file.as_path();
    match client.validate_config(name, &req).await {
        Ok(valid) => {
            if args.json {
                out_json(&valid)?;
            } else {
                let checked = if valid.schema_checked {
                    "parses and passes its schema"
                } else {
                    "parses (no schema set)"
                };
                let sha: String = valid.sha256.chars().take(12).collect();
                out(&format!(
                    "{}: VALID — as {format} for {name} it {checked}; {} bytes, sha256 {sha}",
                    file.display(),
                    valid.size
                ))?;
            }
            Ok(Exit::Ok)
        }
        Err(e) => {
            let Some(body) = e
                .body()
                .filter(|b| b.error == locksmith_api::ErrorCode::InvalidConfig)
            else {
                return Err(failure(&e, name, Some(file)).into());
            };
            if args.json {
                out_json(&Invalid {
                    name,
                    valid: false,
                    parse_error: body.parse_error.as_ref(),
                    violations: &body.violations,
                    message: &body.message,
                })?;
            } else {
                out(&problem_lines(file, body).join("\n"))?;
            }
            let count = problems(body).len();
            let listed = if args.json {
                "in the JSON above"
            } else {
                "listed above"
            };
            Err(Failure {
                exit: Exit::for_code(body.error),
                line: format!(
                    "{name}: INVALID — {} has {count} problem{} ({listed}); a put of it would \
                     be refused: fix it and validate again",
                    file.display(),
                    if count == 1 { "" } else { "s" }
                ),
            }
            .into())
        }
    }
}

/// One line per problem: `FILE: INVALID — <where and what>`.
fn problem_lines(file: &Path, body: &ErrorBody) -> Vec<String> {
    problems(body)
        .into_iter()
        .map(|p| format!("{}: INVALID — {p}", file.display()))
        .collect()
}

/// Each problem of an `invalid_config` refusal, with where it is; the server's sentence when
/// it names none.
fn problems(body: &ErrorBody) -> Vec<String> {
    if let Some(parse) = &body.parse_error {
        return vec![format!(
            "line {}, column {}: {}",
            parse.line, parse.column, parse.message
        )];
    }
    if !body.violations.is_empty() {
        return body.violations.iter().map(ToString::to_string).collect();
    }
    vec![body.message.clone()]
}

/// The one `ERROR:` line for content refused as invalid: every problem, and that nothing was
/// stored.
pub(super) fn invalid_failure(name: &str, file: Option<&Path>, body: &ErrorBody) -> Failure {
    let problems = problems(body);
    // The file, when its name is not the config's own (the problems' lines are the file's).
    let source = file
        .map(|f| f.display().to_string())
        .filter(|f| f != name)
        .map_or_else(String::new, |f| format!(" ({f})"));
    let next = match file {
        Some(f) => format!(
            "nothing was stored; fix {} and try again (check it with 'locksmith config \
             validate {name} {}')",
            f.display(),
            f.display()
        ),
        None => "nothing was stored".to_string(),
    };
    Failure {
        exit: Exit::for_code(body.error),
        line: format!("{name}{source}: INVALID — {}; {next}", problems.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use locksmith_api::ErrorCode;
    use locksmith_config::Violation;

    use super::*;

    fn refused(violations: Vec<Violation>) -> ErrorBody {
        ErrorBody {
            violations,
            ..ErrorBody::new(
                ErrorCode::InvalidConfig,
                "aim_lock_config.conf fails its schema",
            )
        }
    }

    #[test]
    fn each_violation_is_a_line_naming_the_file_the_key_and_the_line() {
        let body = refused(vec![
            Violation {
                path: "safety_threshold".into(),
                message: "1.7 is greater than the maximum of 1".into(),
                line: Some(4),
            },
            Violation {
                path: String::new(),
                message: "\"mode\" is a required property".into(),
                line: None,
            },
        ]);
        let lines = problem_lines(Path::new("aim_lock_config.conf"), &body);
        assert_eq!(
            lines,
            [
                "aim_lock_config.conf: INVALID — safety_threshold: 1.7 is greater than the \
                 maximum of 1 (line 4)",
                "aim_lock_config.conf: INVALID — the document: \"mode\" is a required property",
            ]
        );
        let f = invalid_failure("fleet/aim.conf", Some(Path::new("aim.conf")), &body);
        assert_eq!(f.exit, Exit::Other);
        assert!(
            f.line.starts_with(
                "fleet/aim.conf (aim.conf): INVALID — safety_threshold: 1.7 is greater than the \
                 maximum of 1 (line 4); the document: "
            ),
            "{}",
            f.line
        );
        assert!(
            f.line.contains("nothing was stored; fix aim.conf"),
            "{}",
            f.line
        );
    }
}
