//! How rollout refusals become API errors: each names the rollout (or config) and the next
//! step.

use locksmith_api::rollouts::RequestError;
use locksmith_api::{ErrorBody, ErrorCode};
use locksmith_rollout::{NewError, Refusal as PlannerRefusal};

use crate::domains::configs::errors::{config_not_found, revision_not_found};
use crate::engine::RolloutRefusal;
use crate::request::Refusal;

/// `rollout_not_found` for `id`.
pub fn rollout_not_found(id: &str) -> ErrorBody {
    ErrorBody {
        resource: Some(id.to_owned()),
        ..ErrorBody::new(
            ErrorCode::RolloutNotFound,
            format!("no rollout {id}; 'locksmith rollout ls --all' lists them"),
        )
    }
}

/// `invalid_rollout` for a request whose flags do not make a spec.
pub fn invalid_rollout(config: &str, e: &RequestError) -> ErrorBody {
    ErrorBody {
        resource: Some(config.to_owned()),
        ..ErrorBody::new(ErrorCode::InvalidRollout, e.to_string())
    }
}

fn refused(id: &str, message: String) -> ErrorBody {
    ErrorBody {
        resource: Some(id.to_owned()),
        ..ErrorBody::new(ErrorCode::RolloutRefused, message)
    }
}

/// A planner refusal, with what to do next.
fn planner_refusal(id: &str, e: &PlannerRefusal) -> ErrorBody {
    let next = match e {
        PlannerRefusal::ApprovalByStarter { .. } | PlannerRefusal::DuplicateApproval { .. } => {
            format!("; another operator runs 'locksmith rollout approve {id}' with their token")
        }
        PlannerRefusal::NotAwaitingApproval { .. } | PlannerRefusal::NotPaused { .. } => {
            format!("; 'locksmith rollout status {id}' shows where it is")
        }
        PlannerRefusal::NotStarted => {
            format!("; 'locksmith rollout cancel {id}' withdraws it from the queue")
        }
        PlannerRefusal::AlreadyPaused => {
            format!("; 'locksmith rollout resume {id}' continues it")
        }
        PlannerRefusal::Ended { .. } => format!(
            "; 'locksmith rollout status {id}' shows where it left each endpoint — start a new \
             rollout to go on"
        ),
        _ => String::new(),
    };
    refused(id, format!("{id}: {e}{next}"))
}

impl Refusal for RolloutRefusal {
    fn body(&self) -> ErrorBody {
        match self {
            RolloutRefusal::ConfigNotFound(name) => config_not_found(name),
            RolloutRefusal::RevisionNotFound(name, rev) => revision_not_found(name, *rev),
            RolloutRefusal::NotFound(id) => rollout_not_found(id),
            RolloutRefusal::New(NewError::NoEndpoints) => ErrorBody::new(
                ErrorCode::NoEndpoints,
                "the selector matches no endpoint that applies the config; 'locksmith fleet ls' \
                 shows the endpoints and their labels — fix --select",
            ),
            RolloutRefusal::New(e) => ErrorBody::new(ErrorCode::InvalidRollout, e.to_string()),
            RolloutRefusal::GatesUnavailable(gate) => ErrorBody::new(
                ErrorCode::GatesUnavailable,
                format!(
                    "gate {gate} queries Prometheus, and this server has none; start it with \
                     --prometheus-url URL, or gate on agent metrics"
                ),
            ),
            RolloutRefusal::Planner { id, refusal } => planner_refusal(id, refusal),
            RolloutRefusal::NotQueued(id) => refused(
                id,
                format!(
                    "{id} has started (or ended), so it cannot be cancelled; 'locksmith rollout \
                     abort {id}' ends a running rollout"
                ),
            ),
            RolloutRefusal::LockHeld { id, line } => refused(
                id,
                format!("{line}; the rollout resumes once it can take the lock again"),
            ),
        }
    }
}
