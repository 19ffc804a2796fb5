//! Batched agent operations, for a worker that hosts many agent sessions: one request claims a
//! run for each of several sessions, or reports the outcome of several leases. A batch is one
//! operation (one transaction, so one commit), but each item runs the single-run rule of the agent
//! protocol as its own session, in its own savepoint: an item that fails is undone alone, and no
//! item is treated more leniently than its single-run counterpart.

use serde::Serialize;

use super::{agent, Op};
use crate::error::{Error, Result};
use crate::input::{CompleteInput, FailInput, ReleaseInput, ReportItemInput};
use crate::model::{Caller, OwnerKind, Ref};
use crate::validate::{self, non_empty};
use crate::views::{Claim, LeaseSummary};

/// Most sessions one claim-batch names, and most items one complete-batch carries.
pub const MAX_BATCH_ITEMS: usize = 100;

/// The release reason of a claim whose client went away before receiving it.
pub const UNDELIVERED_REASON: &str = "claimant disconnected before receiving the claim";

/// One session's claim in a claim-batch answer.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionClaim {
    pub session_id: String,
    #[serde(flatten)]
    pub claim: Claim,
}

/// The sessions of a claim-batch: 1 to [`MAX_BATCH_ITEMS`] distinct ids, each held to the rules of
/// the `X-AGH-Session-ID` header.
pub fn validate_sessions(sessions: Option<&[String]>) -> Result<Vec<String>> {
    let sessions = sessions.unwrap_or(&[]);
    if sessions.is_empty() || sessions.len() > MAX_BATCH_ITEMS {
        return Err(Error::validation(format!(
            "sessions must list 1 to {MAX_BATCH_ITEMS} session ids; got {}",
            sessions.len()
        )));
    }
    let mut ids: Vec<String> = Vec::with_capacity(sessions.len());
    for raw in sessions {
        let id = session_id(raw)?;
        if ids.contains(&id) {
            return Err(Error::validation(format!(
                "sessions lists session {id:?} twice"
            )));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn session_id(raw: &str) -> Result<String> {
    validate::identity_header("session_id", Some(raw.as_bytes()))?
        .ok_or_else(|| Error::validation("session_id is required"))
}

/// The caller acting as `session`: the same token, agent name and role as the request, so
/// sessions stay namespaced by the token exactly as with the session header.
fn as_session(caller: &Caller, action: &str, session: &str) -> Caller {
    Caller {
        actor: Ref::new(OwnerKind::AgentSession.as_str(), session),
        origin: Ref::new(caller.origin.kind.clone(), format!("tasks.{action}")),
        ..caller.clone()
    }
}

/// Runs one item as `caller` in its own savepoint. A rule's refusal undoes the item alone and is
/// the item's answer; a storage failure fails the whole batch, since the transaction it leaves
/// behind cannot be trusted.
fn item<R>(
    op: &mut Op<'_>,
    caller: &Caller,
    f: impl FnOnce(&mut Op<'_>) -> Result<R>,
) -> Result<Result<R>> {
    op.store.begin_item()?;
    let mut sub = Op::new(&mut *op.store, op.now, caller);
    let outcome = f(&mut sub);
    let work_available = sub.work_available;
    op.store.end_item(outcome.is_ok())?;
    match outcome {
        Err(e @ (Error::Storage(_) | Error::Unavailable(_))) => Err(e),
        Ok(value) => {
            op.work_available |= work_available;
            Ok(Ok(value))
        }
        Err(e) => Ok(Err(e)),
    }
}

/// Runs `f` once for each entry, each as the entry's caller and atomic on its own.
///
/// Optimistic first: every entry under one savepoint. A savepoint per entry makes SQLite copy
/// each page an entry modifies into its statement journal again, entry after entry (a fifth of a
/// batch's cost when every entry has its own). Only when some entry is refused does that pass
/// roll back and every entry run again, each in its own savepoint ([`item`]), so that the refused
/// ones change nothing and the others still apply. Both passes start from the same state, so
/// the second gives each entry the answer the first would have.
fn each<E, R>(
    op: &mut Op<'_>,
    entries: &[(Caller, E)],
    f: impl Fn(&mut Op<'_>, &E) -> Result<R>,
) -> Result<Vec<Result<R>>> {
    op.store.begin_item()?;
    let mut done = Vec::with_capacity(entries.len());
    let mut work_available = false;
    for (caller, entry) in entries {
        let mut sub = Op::new(&mut *op.store, op.now, caller);
        match f(&mut sub, entry) {
            Ok(value) => {
                work_available |= sub.work_available;
                done.push(Ok(value));
            }
            Err(_) => break,
        }
    }
    if done.len() == entries.len() {
        op.store.end_item(true)?;
        op.work_available |= work_available;
        return Ok(done);
    }
    op.store.end_item(false)?;
    entries
        .iter()
        .map(|(caller, entry)| item(op, caller, |op| f(op, entry)))
        .collect()
}

/// `POST /api/agent/tasks/claim-batch`: one claim attempt for each session, in order, through the
/// claim-next rule. A session that already holds a lease gets nothing; if every session does,
/// the answer is `lease_held`, as claim-next's for one session. An empty list means nothing was
/// claimable.
pub fn claim_batch(
    op: &mut Op<'_>,
    sessions: &[String],
    req: &agent::ClaimRequest,
) -> Result<Vec<SessionClaim>> {
    let entries: Vec<(Caller, &String)> = sessions
        .iter()
        .map(|session| (as_session(op.caller, "claim_batch", session), session))
        .collect();
    let outcomes = each(op, &entries, |op, _| agent::claim_next(op, req))?;
    let mut claims = Vec::new();
    let mut busy = 0;
    for (session, outcome) in sessions.iter().zip(outcomes) {
        match outcome {
            Ok(Some(claim)) => claims.push(SessionClaim {
                session_id: session.clone(),
                claim,
            }),
            Ok(None) => {}
            Err(e) if e.code() == "lease_held" => busy += 1,
            Err(e) => return Err(e),
        }
    }
    if busy == sessions.len() {
        return Err(Error::conflict(
            "lease_held",
            "every listed session already holds an active lease",
        ));
    }
    Ok(claims)
}

/// What a lease report asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Failed,
    Released,
}

impl Outcome {
    fn parse(value: Option<&str>) -> Result<Outcome> {
        match value.map(str::trim) {
            Some("completed") => Ok(Outcome::Completed),
            Some("failed") => Ok(Outcome::Failed),
            Some("released") => Ok(Outcome::Released),
            None | Some("") => Err(Error::validation("outcome is required")),
            Some(other) => Err(Error::validation(format!(
                "outcome must be completed, failed or released; got {other:?}"
            ))),
        }
    }
}

/// The answer to one item of a complete-batch, in request order.
#[derive(Debug)]
pub struct ReportResult {
    /// As the item gave it (empty when it gave none).
    pub run_id: String,
    pub outcome: Result<LeaseSummary>,
}

/// Checks the size of a complete-batch before any item runs.
pub fn validate_reports(items: Option<&[ReportItemInput]>) -> Result<&[ReportItemInput]> {
    let items = items.unwrap_or(&[]);
    if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
        return Err(Error::validation(format!(
            "items must hold 1 to {MAX_BATCH_ITEMS} reports; got {}",
            items.len()
        )));
    }
    Ok(items)
}

/// `POST /api/agent/tasks/complete-batch`: each item completes, fails or releases one run through
/// the single-run rule, fenced on the session it names exactly as with the session header. An
/// item that is invalid or refused is answered with its error and changes nothing; the others
/// still apply.
pub fn report_batch(op: &mut Op<'_>, items: &[ReportItemInput]) -> Result<Vec<ReportResult>> {
    let run_ids: Vec<String> = items
        .iter()
        .map(|input| input.run_id.as_deref().unwrap_or("").trim().to_string())
        .collect();
    // Items that do not name a run, a session and an outcome are answered without running.
    let mut outcomes: Vec<Option<Result<LeaseSummary>>> = Vec::with_capacity(items.len());
    let mut entries = Vec::new();
    for (index, (input, run_id)) in items.iter().zip(&run_ids).enumerate() {
        match report_target(input, run_id) {
            Ok((session, outcome)) => {
                let caller = as_session(op.caller, "complete_batch", &session);
                entries.push((caller, (index, outcome)));
                outcomes.push(None);
            }
            Err(e) => outcomes.push(Some(Err(e))),
        }
    }
    let ran = each(op, &entries, |op, &(index, outcome)| {
        report(op, &run_ids[index], outcome, &items[index])
    })?;
    for ((_, (index, _)), outcome) in entries.iter().zip(ran) {
        outcomes[*index] = Some(outcome);
    }
    Ok(run_ids
        .into_iter()
        .zip(outcomes)
        .map(|(run_id, outcome)| ReportResult {
            run_id,
            outcome: outcome
                .unwrap_or_else(|| Err(Error::Storage("a batch item was not answered".into()))),
        })
        .collect())
}

fn report_target(input: &ReportItemInput, run_id: &str) -> Result<(String, Outcome)> {
    if run_id.is_empty() {
        return Err(Error::validation("run_id is required"));
    }
    let session = session_id(input.session_id.as_deref().unwrap_or(""))?;
    Ok((session, Outcome::parse(input.outcome.as_deref())?))
}

fn report(
    op: &mut Op<'_>,
    run_id: &str,
    outcome: Outcome,
    input: &ReportItemInput,
) -> Result<LeaseSummary> {
    match outcome {
        Outcome::Completed => agent::complete(
            op,
            run_id,
            &CompleteInput {
                result: input.result.clone(),
            },
        ),
        Outcome::Failed => agent::fail(
            op,
            run_id,
            &FailInput {
                error: input.error.clone(),
                metadata: input.metadata.clone(),
            },
        ),
        Outcome::Released => agent::release(
            op,
            run_id,
            &ReleaseInput {
                reason: non_empty(input.reason.as_deref()),
            },
        ),
    }
}

/// Puts back the claims of a claim-batch whose client went away before receiving them, each as
/// the session that holds it. Returns how many were released.
pub fn release_undelivered(op: &mut Op<'_>, claims: &[(String, String)]) -> Result<usize> {
    let mut released = 0;
    for (session, run_id) in claims {
        let caller = as_session(op.caller, "claim_batch", session);
        let release = ReleaseInput {
            reason: Some(UNDELIVERED_REASON.to_string()),
        };
        if item(op, &caller, |op| agent::release(op, run_id, &release))?.is_ok() {
            released += 1;
        }
    }
    Ok(released)
}
