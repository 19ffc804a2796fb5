//! `/api/agent/tasks/...`: the agent protocol. Every handler needs an agent session identity
//! (enforced by the auth middleware).

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tasklane_core::input::{
    ClaimNextInput, CompleteInput, FailInput, HeartbeatInput, ReleaseInput,
};
use tasklane_core::model::Caller;
use tasklane_core::service::agent;
use tasklane_core::views::Claim;
use tasklane_core::Error;
use tokio::sync::oneshot;

use super::json;
use crate::auth::Identity;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::path::Path;
use crate::state::AppState;

/// `POST /api/agent/tasks/claim-next`. With `wait: true` the request parks until a write that
/// may have made work claimable commits (no polling), then tries again; it answers 204 when
/// `wait_seconds` pass with nothing claimed. If the client goes away, the parked request is
/// dropped and claims nothing; if its token is revoked, it answers 401 and claims nothing.
pub async fn claim_next(
    State(s): State<AppState>,
    who: Identity,
    JsonBody(input, _): JsonBody<ClaimNextInput>,
) -> ApiResult<Response> {
    let req = agent::validate_claim(&input)?;
    let caller = who.caller("claim_next");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(req.wait_seconds as u64);
    let mut work = s.work.subscribe();
    let mut shutdown = s.shutting_down.subscribe();
    let mut parked: Option<crate::metrics::Parked> = None;
    loop {
        // Marked seen before trying, so a commit during the attempt still wakes the wait below.
        work.borrow_and_update();
        if who.is_revoked() {
            return Err(Identity::revoked_error());
        }
        let claim = claim_once(&s, &caller, &req).await?;
        if let Some(claim) = claim {
            return Ok(json(StatusCode::OK, json!({ "claim": claim })));
        }
        if !req.wait {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        parked.get_or_insert_with(crate::metrics::Parked::start);
        tokio::select! {
            changed = work.changed() => {
                if changed.is_err() {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NO_CONTENT.into_response()),
            _ = shutdown.wait_for(|s| *s) => return Ok(StatusCode::NO_CONTENT.into_response()),
            () = who.revoked() => return Err(Identity::revoked_error()),
        }
    }
}

/// One claim attempt that is never lost: it runs in its own task, and if the client has gone
/// by the time it commits, the claim is released at once instead of holding the run until its
/// lease expires (which would also count towards the run's poison limit).
async fn claim_once(
    s: &AppState,
    caller: &Caller,
    req: &agent::ClaimRequest,
) -> ApiResult<Option<Claim>> {
    let (answer, answered) = oneshot::channel();
    let (state, caller, attempt) = (s.clone(), caller.clone(), req.clone());
    tokio::spawn(async move {
        let claimer = caller.clone();
        let result = state
            .write(claimer, move |op| agent::claim_next(op, &attempt))
            .await;
        if let Err(Ok(Some(undelivered))) = answer.send(result) {
            let run_id = undelivered.run.run.id.clone();
            let release = ReleaseInput {
                reason: Some("claimant disconnected before receiving the claim".to_string()),
            };
            if let Err(e) = state
                .write(caller, move |op| agent::release(op, &run_id, &release))
                .await
            {
                tracing::warn!(error = ?e.0, "releasing an undelivered claim failed");
            }
        }
    });
    answered
        .await
        .map_err(|_| ApiError(Error::Unavailable("the claim attempt was lost".to_string())))?
}

macro_rules! lease_operation {
    ($name:ident, $action:literal, $input:ty, $rule:path) => {
        pub async fn $name(
            State(s): State<AppState>,
            who: Identity,
            Path(run_id): Path<String>,
            JsonBody(input, body_bytes): JsonBody<$input>,
        ) -> ApiResult<Response> {
            let lease = s
                .write_body(who.caller($action), body_bytes, move |op| $rule(op, &run_id, &input))
                .await?;
            Ok(json(StatusCode::OK, json!({ "lease": lease })))
        }
    };
}

lease_operation!(heartbeat, "heartbeat", HeartbeatInput, agent::heartbeat);
lease_operation!(complete, "agent_complete", CompleteInput, agent::complete);
lease_operation!(fail, "agent_fail", FailInput, agent::fail);
lease_operation!(release, "release", ReleaseInput, agent::release);
