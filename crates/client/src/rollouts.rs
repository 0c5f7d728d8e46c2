//! The rollouts calls (`/v1/rollouts`): one method per route (the module doc of
//! [`locksmith_api::rollouts`] lists them, with bodies and permissions). A rollout id (`ro-4`)
//! is whatever the user typed, so it goes into a URL as one escaped path segment.

use locksmith_api::rollouts::{
    AbortRolloutRequest, RolloutList, RolloutPlan, RolloutView, StartRolloutRequest,
};

use crate::client::{CALL_TIMEOUT, Client};
use crate::error::ClientError;
use crate::events::RolloutStream;

impl Client {
    /// Starts a rollout (`POST /v1/rollouts`): it runs at once, or is queued behind the
    /// config's other rollouts (the view says which).
    pub async fn start_rollout(
        &self,
        req: &StartRolloutRequest,
    ) -> Result<RolloutView, ClientError> {
        locksmith_config::validate_name(&req.config)?;
        let url = self.url("/v1/rollouts");
        self.send(self.http.post(url).json(req), CALL_TIMEOUT).await
    }

    /// What `req` would do (`POST /v1/rollouts/plan`): the waves and their endpoints, the diff
    /// each endpoint would get, the queue it would wait behind. Nothing is stored.
    pub async fn plan_rollout(
        &self,
        req: &StartRolloutRequest,
    ) -> Result<RolloutPlan, ClientError> {
        locksmith_config::validate_name(&req.config)?;
        let url = self.url("/v1/rollouts/plan");
        self.send(self.http.post(url).json(req), CALL_TIMEOUT).await
    }

    /// The rollouts that are running or queued (of `config`, when given); with `all`, the
    /// ended and cancelled ones too. Newest first.
    pub async fn rollouts(
        &self,
        config: Option<&str>,
        all: bool,
    ) -> Result<RolloutList, ClientError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(name) = config {
            locksmith_config::validate_name(name)?;
            query.push(("config", name));
        }
        if all {
            query.push(("all", "true"));
        }
        let rb = self.http.get(self.url("/v1/rollouts")).query(&query);
        self.send(rb, CALL_TIMEOUT).await
    }

    /// One rollout.
    pub async fn rollout(&self, id: &str) -> Result<RolloutView, ClientError> {
        let url = self.rollout_url(id, None)?;
        self.send(self.http.get(url), CALL_TIMEOUT).await
    }

    /// Approves the hold point the rollout waits at, as this client's token. The starter's
    /// own approval never counts; each principal counts once per hold point.
    pub async fn approve_rollout(&self, id: &str) -> Result<RolloutView, ClientError> {
        self.rollout_action(id, "approve").await
    }

    /// Pauses the rollout where it is (nothing more is sent until it resumes).
    pub async fn pause_rollout(&self, id: &str) -> Result<RolloutView, ClientError> {
        self.rollout_action(id, "pause").await
    }

    /// Resumes a paused rollout from where it paused (a bake starts over).
    pub async fn resume_rollout(&self, id: &str) -> Result<RolloutView, ClientError> {
        self.rollout_action(id, "resume").await
    }

    /// Ends the rollout now. `rollback`: every touched endpoint back to its own last-known-good;
    /// otherwise those confirmed on the new revision stay on it. The view's outcome lists where
    /// every endpoint is left.
    pub async fn abort_rollout(
        &self,
        id: &str,
        rollback: bool,
    ) -> Result<RolloutView, ClientError> {
        let url = self.rollout_url(id, Some("abort"))?;
        let req = AbortRolloutRequest { rollback };
        self.send(self.http.post(url).json(&req), CALL_TIMEOUT)
            .await
    }

    /// Cancels a queued rollout (one that has not started).
    pub async fn cancel_rollout(&self, id: &str) -> Result<RolloutView, ClientError> {
        self.rollout_action(id, "cancel").await
    }

    /// Opens the rollout's event stream; read it with [`RolloutStream::next`].
    pub async fn rollout_events(&self, id: &str) -> Result<RolloutStream, ClientError> {
        let url = self.rollout_url(id, Some("events"))?;
        let resp = self.open_stream(self.http.get(url)).await?;
        Ok(RolloutStream::new(resp, self.base().to_string()))
    }

    /// `POST /v1/rollouts/{id}/{what}` without a body.
    async fn rollout_action(&self, id: &str, what: &str) -> Result<RolloutView, ClientError> {
        let url = self.rollout_url(id, Some(what))?;
        self.send(self.http.post(url), CALL_TIMEOUT).await
    }

    /// `/v1/rollouts/{id}[/{what}]`, the id as one escaped segment.
    fn rollout_url(&self, id: &str, what: Option<&str>) -> Result<reqwest::Url, ClientError> {
        if id.is_empty() || id == "." || id == ".." {
            return Err(ClientError::InvalidRolloutId { id: id.to_string() });
        }
        let mut url = self.url("/v1/rollouts");
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push(id);
            if let Some(what) = what {
                segments.push(what);
            }
        }
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_id_is_one_escaped_segment() {
        let client = Client::new("http://127.0.0.1:7400/base/").expect("client");
        assert_eq!(
            client
                .rollout_url("ro-4", Some("approve"))
                .expect("usable")
                .as_str(),
            "http://127.0.0.1:7400/base/v1/rollouts/ro-4/approve"
        );
        assert_eq!(
            client.rollout_url("ro 4/x", None).expect("usable").as_str(),
            "http://127.0.0.1:7400/base/v1/rollouts/ro%204%2Fx"
        );
        for bad in ["", ".", ".."] {
            assert!(
                matches!(
                    client.rollout_url(bad, None),
                    Err(ClientError::InvalidRolloutId { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
