//! Prometheus query gates (`--gate 'prom:QUERY < 0.01'`): the driver runs the gate's query as
//! an instant query against `--prometheus-url` at the end of a wave's bake, and only the
//! verdict reaches the planner.
//!
//! [`instant_query`] calls `GET BASE/api/v1/query?query=…&time=…` and returns one sample per
//! series of a `vector` result (a `scalar` is one sample). `NaN` comes back as `NaN`, so the
//! gate is inconclusive rather than passing on a division by zero. A query that matches no
//! series gives no samples: "no data", which [`verdict`] judges by `must_have_data`. Every
//! failure to get an answer is a [`PromError`]; the caller makes that inconclusive too (a gate
//! never passes because Prometheus was down).

use std::time::Duration;

use locksmith_rollout::{Comparison, Verdict, evaluate_metric};
use serde::Deserialize;
use thiserror::Error;

/// How long one query may take: a Prometheus that does not answer is inconclusive, not a hang.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read: a query matching more series than this holds is a mistake in the
/// gate (a rollout gate judges a few numbers), not something to buffer.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Why a Prometheus gate's query got no samples to judge.
#[derive(Debug, Error)]
pub enum PromError {
    /// No connection, or it broke before an answer.
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable {
        /// The URL called (without the query).
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("Prometheus at {url} did not answer within {} ms", after.as_millis())]
    TimedOut {
        /// The URL called (without the query).
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// An HTTP status other than 2xx, without Prometheus' error body (a proxy, a wrong path).
    #[error("Prometheus at {url} answered HTTP {status}: {body}")]
    Status {
        /// The URL called (without the query).
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// Prometheus refused or failed the query (`"status": "error"`): a PromQL syntax error
    /// (`bad_data`), an execution error, a timeout on its side.
    #[error("Prometheus refused the query ({error_type}): {error}")]
    Query {
        /// Its `errorType`: `bad_data`, `execution`, `timeout`, `canceled`, `internal`, ….
        error_type: String,
        /// Its `error`.
        error: String,
    },
    /// A result a threshold cannot judge: `matrix` (a range selector like `x[5m]`: wrap it in
    /// a function such as `rate(x[5m])`) or `string`.
    #[error(
        "the query returns a {result_type}, which a gate cannot compare with a threshold: write a query that returns an instant vector or a scalar (e.g. rate(x[5m]), not x[5m])"
    )]
    Unsupported {
        /// Prometheus' `resultType`.
        result_type: String,
    },
    /// A body that is not Prometheus' JSON (or too large to read).
    #[error("the answer of {url} is not Prometheus' query API JSON: {reason}")]
    Decode {
        /// The URL called (without the query).
        url: String,
        /// What is wrong.
        reason: String,
    },
}

/// Prometheus' answer envelope.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    status: String,
    data: Option<Data>,
    error_type: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: serde_json::Value,
}

/// One series of a vector: its labels and `[time, "value"]`.
#[derive(Debug, Deserialize)]
struct Series {
    value: (f64, String),
}

/// Runs `query` at `at_ms` (Unix ms) against the Prometheus at `base_url` (`http://host:9090`,
/// or with a path prefix) within [`QUERY_TIMEOUT`]: one sample per series of a vector, one
/// for a scalar, none when nothing matched.
pub async fn instant_query(
    client: &reqwest::Client,
    base_url: &str,
    query: &str,
    at_ms: u64,
) -> Result<Vec<f64>, PromError> {
    instant_query_within(client, base_url, query, at_ms, QUERY_TIMEOUT).await
}

/// [`instant_query`] with another timeout.
pub async fn instant_query_within(
    client: &reqwest::Client,
    base_url: &str,
    query: &str,
    at_ms: u64,
    timeout: Duration,
) -> Result<Vec<f64>, PromError> {
    let url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
    let time = format!("{}.{:03}", at_ms / 1000, at_ms % 1000);
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            PromError::TimedOut {
                url: url.clone(),
                after: timeout,
            }
        } else {
            PromError::Unreachable {
                url: url.clone(),
                reason: chain(&e),
            }
        }
    };
    let mut response = client
        .get(&url)
        .query(&[("query", query), ("time", time.as_str())])
        .timeout(timeout)
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(PromError::Decode {
                url,
                reason: format!("the answer is larger than {MAX_BODY_BYTES} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    // Prometheus answers its own errors (400 bad_data, 422 execution, 503 timeout) with the
    // JSON envelope: read it first, so the error names what Prometheus said.
    let envelope = serde_json::from_slice::<Envelope>(&body);
    if let Ok(Envelope {
        status: s,
        error_type,
        error,
        ..
    }) = &envelope
        && s == "error"
    {
        return Err(PromError::Query {
            error_type: error_type.clone().unwrap_or_default(),
            error: error.clone().unwrap_or_default(),
        });
    }
    if !status.is_success() {
        return Err(PromError::Status {
            url,
            status: status.as_u16(),
            body: start_of(&body),
        });
    }
    let envelope = envelope.map_err(|e| PromError::Decode {
        url: url.clone(),
        reason: format!("{e} (the body starts {:?})", start_of(&body)),
    })?;
    let decode = |reason: String| PromError::Decode {
        url: url.clone(),
        reason,
    };
    let (true, Some(data)) = (envelope.status == "success", envelope.data) else {
        return Err(decode(format!(
            "status {:?} without data (a success carries `data`)",
            envelope.status
        )));
    };
    match data.result_type.as_str() {
        "vector" => {
            let series: Vec<Series> =
                serde_json::from_value(data.result).map_err(|e| decode(e.to_string()))?;
            series
                .iter()
                .map(|s| sample(&s.value.1).ok_or_else(|| decode(bad_value(&s.value.1))))
                .collect()
        }
        "scalar" => {
            let (_, value): (f64, String) =
                serde_json::from_value(data.result).map_err(|e| decode(e.to_string()))?;
            let v = sample(&value).ok_or_else(|| decode(bad_value(&value)))?;
            Ok(vec![v])
        }
        other => Err(PromError::Unsupported {
            result_type: other.to_owned(),
        }),
    }
}

/// The gate's verdict over the samples: the metric gates' rule itself
/// ([`locksmith_rollout::evaluate_metric`]) — every sample must hold, any `NaN` is
/// inconclusive, and too few samples (or none, with `must_have_data`) is inconclusive.
pub fn verdict(
    op: Comparison,
    threshold: f64,
    samples: &[f64],
    min_samples: u32,
    must_have_data: bool,
) -> Verdict {
    evaluate_metric(op, threshold, samples, min_samples, must_have_data)
}

/// A sample as Prometheus writes it: a decimal, `NaN`, `+Inf` or `-Inf`.
fn sample(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse::<f64>().ok(),
    }
}

fn bad_value(s: &str) -> String {
    format!("the sample value {s:?} is not a number")
}

/// The first 200 characters of a body, for an error message.
fn start_of(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// An error with its causes (reqwest's own message is only "error sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_as_prometheus_writes_them() {
        assert_eq!(sample("0.002"), Some(0.002));
        assert_eq!(sample("1e-3"), Some(0.001));
        assert_eq!(sample("+Inf"), Some(f64::INFINITY));
        assert_eq!(sample("-Inf"), Some(f64::NEG_INFINITY));
        assert!(sample("NaN").is_some_and(f64::is_nan));
        assert_eq!(sample("one"), None);
    }

    #[test]
    fn the_verdict_is_the_metric_gates_rule() {
        use Comparison::Lt;
        assert_eq!(verdict(Lt, 0.01, &[0.002, 0.004], 1, true), Verdict::Pass);
        assert_eq!(verdict(Lt, 0.003, &[0.002, 0.004], 1, true), Verdict::Fail);
        assert_eq!(verdict(Lt, 0.01, &[], 1, true), Verdict::Inconclusive);
        assert_eq!(verdict(Lt, 0.01, &[], 1, false), Verdict::Pass);
        assert_eq!(
            verdict(Lt, 0.01, &[f64::NAN], 1, true),
            Verdict::Inconclusive
        );
        assert_eq!(verdict(Lt, 0.01, &[0.002], 2, true), Verdict::Inconclusive);
    }
}
