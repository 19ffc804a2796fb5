//! `/api/agent/tasks/...`: the agent protocol. Every handler acts as an agent session: the
//! request's identity (enforced by the auth middleware), or for the batch endpoints, the sessions
//! the body names.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use tasklane_core::input::{
    ClaimBatchInput, ClaimNextInput, CompleteInput, FailInput, HeartbeatInput, ReleaseInput,
    ReportBatchInput,
};
use tasklane_core::model::Caller;
use tasklane_core::service::{agent, batch, Op};
use tasklane_core::views::{Claim, LeaseSummary};
use tasklane_core::Error;
use tokio::sync::oneshot;

use super::{keyed, path_write};
use crate::auth::Identity;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::identity::{header_value, AGENT_HEADER};
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
    let claimed = park(&s, &who, &req, || {
        let attempt = req.clone();
        claim_delivered(
            &s,
            &caller,
            move |op| agent::claim_next(op, &attempt),
            |claim: Option<Claim>| {
                let run_id = claim?.run.run.id;
                Some(Box::new(move |op: &mut Op<'_>| {
                    agent::release(op, &run_id, &undelivered_release()).map(drop)
                }) as Undo)
            },
        )
    })
    .await?;
    Ok(match claimed {
        Some(claim) => keyed(StatusCode::OK, "claim", claim),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// `POST /api/agent/tasks/claim-batch`: claim-next for each of the listed sessions of one worker,
/// in one transaction. Answers the claims made, or 204 when none could be; parks like claim-next
/// with `wait: true` until at least one claim is made.
pub async fn claim_batch(
    State(s): State<AppState>,
    who: Identity,
    headers: HeaderMap,
    JsonBody(input, _): JsonBody<ClaimBatchInput>,
) -> ApiResult<Response> {
    let req = agent::validate_claim(&input.claim())?;
    let sessions = batch::validate_sessions(input.sessions.as_deref())?;
    let caller = batch_caller(&who, &headers, "claim_batch")?;
    let claimed = park(&s, &who, &req, || {
        let (attempt, sessions) = (req.clone(), sessions.clone());
        claim_delivered(
            &s,
            &caller,
            move |op| {
                let claims = batch::claim_batch(op, &sessions, &attempt)?;
                Ok((!claims.is_empty()).then_some(claims))
            },
            |claims: Option<Vec<batch::SessionClaim>>| {
                let held: Vec<(String, String)> = claims?
                    .into_iter()
                    .map(|c| (c.session_id, c.claim.run.run.id))
                    .collect();
                Some(Box::new(move |op: &mut Op<'_>| {
                    batch::release_undelivered(op, &held).map(drop)
                }) as Undo)
            },
        )
    })
    .await?;
    Ok(match claimed {
        Some(claims) => keyed(StatusCode::OK, "claims", claims),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// The caller whose sessions a batch acts as. Without `X-AGH-Session-ID` an open-mode caller is
/// not an agent session, so the agent name the worker announces (`X-AGH-Agent`) is read here;
/// it is the name every session of the batch claims and is recorded under.
fn batch_caller(who: &Identity, headers: &HeaderMap, action: &str) -> ApiResult<Caller> {
    let mut caller = who.caller(action);
    if caller.agent_name.is_none() {
        caller.agent_name = header_value(headers, AGENT_HEADER)?;
    }
    Ok(caller)
}

/// Tries `attempt` once, and with `wait` again after each commit that may have made work
/// claimable, until it claims something or the wait ends (`None`). A revoked token answers 401.
async fn park<T, F, Fut>(
    s: &AppState,
    who: &Identity,
    req: &agent::ClaimRequest,
    mut attempt: F,
) -> ApiResult<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ApiResult<Option<T>>>,
{
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
        if let Some(claimed) = attempt().await? {
            return Ok(Some(claimed));
        }
        if !req.wait {
            return Ok(None);
        }
        parked.get_or_insert_with(crate::metrics::Parked::start);
        tokio::select! {
            changed = work.changed() => {
                if changed.is_err() {
                    return Ok(None);
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(None),
            _ = shutdown.wait_for(|s| *s) => return Ok(None),
            () = who.revoked() => return Err(Identity::revoked_error()),
        }
    }
}

/// Puts back claims their client never received.
type Undo = Box<dyn Fn(&mut Op<'_>) -> tasklane_core::Result<()> + Send>;

fn undelivered_release() -> ReleaseInput {
    ReleaseInput {
        reason: Some(batch::UNDELIVERED_REASON.to_string()),
    }
}

/// One claim attempt that is never lost: it runs in its own task, and if the client has gone
/// by the time it commits, what it claimed is released at once (`undo`) instead of holding the
/// runs until their leases expire (which would also count towards each run's poison limit).
async fn claim_delivered<T, F, U>(
    s: &AppState,
    caller: &Caller,
    attempt: F,
    undo: U,
) -> ApiResult<T>
where
    T: Send + 'static,
    F: Fn(&mut Op<'_>) -> tasklane_core::Result<T> + Send + 'static,
    U: FnOnce(T) -> Option<Undo> + Send + 'static,
{
    let (answer, answered) = oneshot::channel();
    let (state, caller) = (s.clone(), caller.clone());
    tokio::spawn(async move {
        let result = state.write(caller.clone(), attempt).await;
        if let Err(Ok(undelivered)) = answer.send(result) {
            let Some(release) = undo(undelivered) else {
                return;
            };
            if let Err(e) = state.write(caller, release).await {
                tracing::warn!(error = ?e.0, "releasing an undelivered claim failed");
            }
        }
    });
    answered
        .await
        .map_err(|_| ApiError(Error::Unavailable("the claim attempt was lost".to_string())))?
}

/// `POST /api/agent/tasks/complete-batch`: completes, fails or releases many leases in one
/// transaction, each item on its own; answers every item's result in request order.
pub async fn complete_batch(
    State(s): State<AppState>,
    who: Identity,
    headers: HeaderMap,
    JsonBody(input, body_bytes): JsonBody<ReportBatchInput>,
) -> ApiResult<Response> {
    batch::validate_reports(input.items.as_deref())?;
    let caller = batch_caller(&who, &headers, "complete_batch")?;
    let results = s
        .write_body(caller, body_bytes, move |op| {
            batch::report_batch(op, input.items.as_deref().unwrap_or(&[]))
        })
        .await?;
    let results: Vec<ItemAnswer> = results
        .into_iter()
        .map(|r| match r.outcome {
            Ok(lease) => ItemAnswer {
                run_id: r.run_id,
                ok: true,
                lease: Some(lease),
                error: None,
            },
            Err(e) => ItemAnswer {
                run_id: r.run_id,
                ok: false,
                lease: None,
                error: Some(ApiError(e).item_json()),
            },
        })
        .collect();
    Ok(keyed(StatusCode::OK, "results", results))
}

/// One item of a complete-batch answer: its lease when it was done, its error when not.
#[derive(Serialize)]
struct ItemAnswer {
    run_id: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

path_write!(
    heartbeat,
    "heartbeat",
    HeartbeatInput,
    agent::heartbeat,
    OK,
    "lease"
);
path_write!(
    complete,
    "agent_complete",
    CompleteInput,
    agent::complete,
    OK,
    "lease"
);
path_write!(fail, "agent_fail", FailInput, agent::fail, OK, "lease");
path_write!(
    release,
    "release",
    ReleaseInput,
    agent::release,
    OK,
    "lease"
);
