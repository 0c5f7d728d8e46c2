//! Prometheus instant queries for rollouts' `prom:` gates (placeholder until the gates branch
//! lands; replaced by its module).

/// Why a query gave no samples to judge.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PromError(String);

/// One sample per series of the query's vector result at `at_ms` (a scalar is one sample).
pub async fn instant_query(
    client: &reqwest::Client,
    base_url: &str,
    query: &str,
    at_ms: u64,
) -> Result<Vec<f64>, PromError> {
    let url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
    let time = format!("{}.{:03}", at_ms / 1000, at_ms % 1000);
    let body: serde_json::Value = client
        .get(&url)
        .query(&[("query", query), ("time", time.as_str())])
        .send()
        .await
        .map_err(|e| PromError(format!("{url}: {e}")))?
        .json()
        .await
        .map_err(|e| PromError(format!("{url}: {e}")))?;
    if body["status"] != "success" {
        return Err(PromError(format!("{url}: {}", body["error"])));
    }
    let value = |v: &serde_json::Value| {
        v.get(1)
            .and_then(|s| s.as_str())
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    match body["data"]["resultType"].as_str() {
        Some("vector") => Ok(body["data"]["result"]
            .as_array()
            .map(|a| a.iter().map(|s| value(&s["value"])).collect())
            .unwrap_or_default()),
        Some("scalar") => Ok(vec![value(&body["data"]["result"])]),
        other => Err(PromError(format!(
            "{url}: a {other:?} result cannot be judged"
        ))),
    }
}
