//! The agent protocol: claim-next under a lease, heartbeat, complete, fail, release, and the
//! recovery of leases that lapsed. Every lease operation is fenced on (run, session, claim token
//! hash, status, `lease_until > now`) inside its transaction, so a stale holder can never act on a
//! newer claim.

use rand::RngCore;
use sha2::{Digest, Sha256};

use super::runs::{finish_completion, finish_failure};
use super::{Op, Payload};
use crate::claim_audience;
use crate::error::{Error, Result};
use crate::input::{ClaimNextInput, CompleteInput, FailInput, HeartbeatInput, ReleaseInput};
use crate::model::{Caller, Priority, Ref, Run, RunStatus, Task};
use crate::store::{LeaseView, Neighbourhood};
use crate::time::Ts;
use crate::validate::{self, non_empty, RESULT_LIMIT};
use crate::views::{Claim, LeaseSummary};

pub const DEFAULT_LEASE_SECONDS: i64 = 300;
pub const MAX_LEASE_SECONDS: i64 = 86_400;
pub const DEFAULT_WAIT_SECONDS: i64 = 30;
pub const MAX_WAIT_SECONDS: i64 = 300;
/// A validated claim-next request.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub idempotency_key: Option<String>,
    pub lease_seconds: i64,
    /// `None` when `priority_min` is above every priority: nothing can match.
    pub min_priority: Option<Priority>,
    pub offered: Vec<String>,
    pub workspace_id: Option<String>,
    pub wait: bool,
    pub wait_seconds: i64,
}

fn lease_seconds(value: Option<i64>) -> Result<i64> {
    match value {
        None | Some(0) => Ok(DEFAULT_LEASE_SECONDS),
        Some(s) if (1..=MAX_LEASE_SECONDS).contains(&s) => Ok(s),
        Some(s) => Err(Error::validation(format!(
            "lease_seconds must be between 1 and {MAX_LEASE_SECONDS}; got {s}"
        ))),
    }
}

/// Task priorities on the reference's numeric scale (low 10 … urgent 40).
fn min_priority(priority_min: Option<i64>) -> Result<Option<Priority>> {
    match priority_min.unwrap_or(0) {
        n if n < 0 => Err(Error::validation(format!(
            "priority_min must not be negative; got {n}"
        ))),
        n if n <= 10 => Ok(Some(Priority::Low)),
        n if n <= 20 => Ok(Some(Priority::Medium)),
        n if n <= 30 => Ok(Some(Priority::High)),
        n if n <= 40 => Ok(Some(Priority::Urgent)),
        _ => Ok(None),
    }
}

pub fn validate_claim(input: &ClaimNextInput) -> Result<ClaimRequest> {
    let wait_seconds = match input.wait_seconds {
        None => DEFAULT_WAIT_SECONDS,
        Some(s) if (0..=MAX_WAIT_SECONDS).contains(&s) => s,
        Some(s) => {
            return Err(Error::validation(format!(
                "wait_seconds must be between 0 and {MAX_WAIT_SECONDS}; got {s}"
            )))
        }
    };
    let workspace_id = non_empty(input.workspace_id.as_deref());
    if let Some(ws) = &workspace_id {
        validate::workspace_id(ws)?;
    }
    Ok(ClaimRequest {
        idempotency_key: non_empty(input.idempotency_key.as_deref()),
        lease_seconds: lease_seconds(input.lease_seconds)?,
        min_priority: min_priority(input.priority_min)?,
        offered: validate::capabilities(
            "required_capabilities",
            input.required_capabilities.as_deref().unwrap_or(&[]),
        )?,
        workspace_id,
        wait: input.wait.unwrap_or(false),
        wait_seconds,
    })
}

fn session_of(caller: &Caller) -> Result<String> {
    caller
        .session_id()
        .map(str::to_string)
        .ok_or_else(|| Error::Unauthorized {
            code: "identity_required",
            message: "the agent API needs an agent session identity".to_string(),
        })
}

fn lease_live(run: &Run, now: Ts) -> bool {
    run.status.is_active() && run.lease_until.is_some_and(|until| until > now)
}

/// One claim attempt: `Ok(None)` when nothing is claimable for this caller now.
pub fn claim_next(op: &mut Op<'_>, req: &ClaimRequest) -> Result<Option<Claim>> {
    let session = session_of(op.caller)?;
    let token = op.caller.session_token();
    let audiences = claim_audience::of_claimer(
        req.workspace_id.as_deref(),
        &session,
        op.caller.agent_name.as_deref(),
    );
    let (active, heads) = op.store.claim_view(
        &session,
        token,
        req.min_priority.map(|p| (audiences.as_slice(), p)),
    )?;
    let replay = req.idempotency_key.as_ref().and_then(|key| {
        active.iter().find(|r| {
            r.claim_idempotency_key.as_deref() == Some(key.as_str()) && lease_live(r, op.now)
        })
    });
    // A run bound to the session without a lease (operator attach) also counts: the session is busy.
    if replay.is_none() {
        if let Some(held) = active
            .iter()
            .find(|r| r.lease_until.is_none_or(|until| until > op.now))
        {
            return Err(Error::conflict(
                "lease_held",
                format!(
                    "session {session} already holds an active lease on task run {}",
                    held.id
                ),
            ));
        }
    }
    // Written once the call is known to be allowed: a refused claim writes nothing, which
    // spares the writer an undo.
    op.touch_session()?;
    if let Some(run) = replay {
        let task = op.load_task(&run.task_id)?;
        return Ok(Some(Claim::new(&task, run)));
    }
    let Some(mut run) = best_candidate(heads, &req.offered) else {
        return Ok(None);
    };
    let (mut task, around) = op.load_task_around(&run.task_id)?;
    let hash = new_claim_token_hash();
    run.status = RunStatus::Claimed;
    run.claimed_by = Some(op.caller.actor.clone());
    run.session_id = Some(session);
    run.session_token = op.caller.session_token().map(str::to_string);
    run.claim_token_hash = Some(hash.clone());
    run.lease_until = Some(op.now.plus_seconds(req.lease_seconds));
    run.heartbeat_at = Some(op.now);
    run.claimed_at = Some(op.now);
    run.started_at = None;
    run.ended_at = None;
    run.error = None;
    run.result = None;
    run.claim_idempotency_key = req.idempotency_key.clone();
    op.save_run(&mut task, around, &run)?;
    let payload = Payload::new()
        .set("status", run.status.as_str())
        .set("task_status", task.status.as_str())
        .json("claimed_by", &run.claimed_by)
        .set("claim_token_hash", hash)
        .json("lease_until", run.lease_until)
        .build();
    op.record(&mut task, Some(&run.id), "task.run_claimed", payload)?;
    Ok(Some(Claim::new(&task, &run)))
}

/// The best queued run this caller may claim among `heads` (the oldest run of each claim class
/// of its audiences): highest priority, then (when the caller offers capabilities) most
/// preferred capabilities matched, then oldest, then lowest id.
///
/// Every run of a claim class shares its priority and capability sets, so the class's oldest run
/// stands for the whole class: the rules are applied to one head per class, and the cost of a
/// claim follows the number of classes, not of queued runs.
fn best_candidate(heads: Vec<Run>, offered: &[String]) -> Option<Run> {
    let mut best: Option<(ClaimRank, Run)> = None;
    for head in heads {
        let Some(rank) = ClaimRank::of(&head, offered) else {
            continue;
        };
        if best.as_ref().is_none_or(|(b, _)| rank > *b) {
            best = Some((rank, head));
        }
    }
    best.map(|(_, run)| run)
}

/// How a claimable run ranks for a caller; greater wins. Preferred matches only count when the
/// caller offers capabilities (with none offered every run matches none, so nothing changes).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ClaimRank {
    priority: i64,
    preferred_matched: usize,
    older: std::cmp::Reverse<(Ts, String)>,
}

impl ClaimRank {
    /// `None` when the caller lacks one of the run's required capabilities.
    fn of(run: &Run, offered: &[String]) -> Option<Self> {
        if !run
            .required_capabilities
            .iter()
            .all(|c| offered.contains(c))
        {
            return None;
        }
        Some(ClaimRank {
            priority: run.priority.rank(),
            preferred_matched: run
                .preferred_capabilities
                .iter()
                .filter(|c| offered.contains(c))
                .count(),
            older: std::cmp::Reverse((run.queued_at, run.id.clone())),
        })
    }
}

/// Claim tokens are random and shown to nobody; only their hash is kept, and it identifies the
/// claim in every fenced operation.
fn new_claim_token_hash() -> String {
    let mut token = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut token);
    format!("sha256:{}", hex::encode(Sha256::digest(token)))
}

/// An agent acting through a token never touches a run that another token's session leases.
/// Operators (who hold no leases) and open mode are not bound by it.
pub(crate) fn refuse_foreign_lease(op: &Op<'_>, run: &Run) -> Result<()> {
    let Some(token) = op.caller.session_token() else {
        return Ok(());
    };
    let leased = run.status.is_active() && run.claim_token_hash.is_some();
    if leased && run.session_token.as_deref() != Some(token) {
        return Err(Error::forbidden(
            "foreign_run",
            format!(
                "task run {} is leased by an agent session of another token",
                run.id
            ),
        ));
    }
    Ok(())
}

/// A run under the caller's live lease, with its task and, when asked for, the task's
/// neighbourhood, as read together with it.
struct Lease {
    run: Run,
    task: Task,
    around: Option<Neighbourhood>,
}

impl Lease {
    /// The task and its neighbourhood, for a lease resolved with `around`.
    fn task_around(self) -> Result<(Run, Task, Neighbourhood)> {
        let around = self.around.ok_or_else(|| {
            Error::Storage("the lease was resolved without its task's neighbourhood".into())
        })?;
        Ok((self.run, self.task, around))
    }
}

/// Resolves the caller's live lease on `run_id`, reading the task's neighbourhood too if
/// `around` (what a call that ends or requeues the run reconciles its task from).
fn resolve_lease(op: &mut Op<'_>, run_id: &str, around: bool) -> Result<Lease> {
    let session = session_of(op.caller)?;
    let token = op.caller.session_token();
    let now = op.now;
    let LeaseView {
        active,
        run,
        task,
        around,
    } = op.store.lease_view(&session, token, run_id, around)?;
    let live: Vec<Run> = active
        .into_iter()
        .filter(|r| r.claim_token_hash.is_some() && lease_live(r, now))
        .collect();
    if live.len() > 1 {
        return Err(Error::conflict(
            "lease_held",
            format!("session {session} holds more than one active lease"),
        ));
    }
    let resolved = match run {
        Some(run)
            if run.session_id.as_deref() == Some(session.as_str())
                && run.session_token.as_deref() == token
                && run.claim_token_hash.is_some() =>
        {
            if lease_live(&run, now) {
                let task = task.ok_or_else(|| Error::task_not_found(&run.task_id))?;
                Ok(Lease { run, task, around })
            } else {
                Err(Error::conflict(
                    "lease_expired",
                    format!("task run {run_id} is not an active lease of session {session}"),
                ))
            }
        }
        _ if live.len() == 1 => Err(Error::forbidden(
            "foreign_run",
            format!(
                "task run {run_id} is not leased to session {session}, which holds task run {}",
                live[0].id
            ),
        )),
        _ => Err(Error::conflict(
            "no_active_lease",
            format!("session {session} holds no active lease on task run {run_id}"),
        )),
    };
    // Written once the call is known to be allowed: a refused call writes nothing, which spares
    // the writer an undo.
    if resolved.is_ok() {
        op.touch_session()?;
    }
    resolved
}

/// `POST /api/agent/tasks/{run_id}/heartbeat`: the lease now ends `lease_seconds` from now.
pub fn heartbeat(op: &mut Op<'_>, run_id: &str, input: &HeartbeatInput) -> Result<LeaseSummary> {
    let seconds = lease_seconds(input.lease_seconds)?;
    let Lease {
        mut run, mut task, ..
    } = resolve_lease(op, run_id, false)?;
    run.lease_until = Some(op.now.plus_seconds(seconds));
    run.heartbeat_at = Some(op.now);
    op.store.update_run(&run)?;
    let payload = Payload::new()
        .set("status", run.status.as_str())
        .set("task_status", task.status.as_str())
        .json("lease_until", run.lease_until)
        .json("heartbeat_at", run.heartbeat_at)
        .opt("claim_token_hash", run.claim_token_hash.clone())
        .build();
    op.record(&mut task, Some(&run.id), "task.run_lease_extended", payload)?;
    Ok(LeaseSummary::from(&run))
}

/// Ends a lease: the hash, session and claimant stay on the finished run for audit.
fn end_lease(run: &mut Run, status: RunStatus, now: Ts) {
    run.status = status;
    run.ended_at = Some(now);
    run.lease_until = None;
    run.heartbeat_at = None;
    run.claim_idempotency_key = None;
}

fn hash_payload(run: &Run) -> Payload {
    Payload::new().opt("claim_token_hash", run.claim_token_hash.clone())
}

/// `POST /api/agent/tasks/{run_id}/complete`: from claimed, starting or running.
pub fn complete(op: &mut Op<'_>, run_id: &str, input: &CompleteInput) -> Result<LeaseSummary> {
    if let Some(result) = &input.result {
        validate::check_json(result, RESULT_LIMIT, "result")?;
    }
    let (mut run, task, around) = resolve_lease(op, run_id, true)?.task_around()?;
    end_lease(&mut run, RunStatus::Completed, op.now);
    run.result = input.result.clone();
    run.error = None;
    let extra = hash_payload(&run);
    finish_completion(op, (task, around), &mut run, extra)?;
    Ok(LeaseSummary::from(&run))
}

/// `POST /api/agent/tasks/{run_id}/fail`: from claimed, starting or running. No automatic retry.
pub fn fail(op: &mut Op<'_>, run_id: &str, input: &FailInput) -> Result<LeaseSummary> {
    let error =
        non_empty(input.error.as_deref()).ok_or_else(|| Error::validation("error is required"))?;
    if let Some(m) = &input.metadata {
        validate::check_json(m, RESULT_LIMIT, "metadata")?;
    }
    let (mut run, task, around) = resolve_lease(op, run_id, true)?.task_around()?;
    end_lease(&mut run, RunStatus::Failed, op.now);
    run.error = Some(error);
    run.result = None;
    let extra = hash_payload(&run);
    finish_failure(op, (task, around), &mut run, input.metadata.clone(), extra)?;
    Ok(LeaseSummary::from(&run))
}

/// Puts a run back in the queue, same attempt and same queue position, with every trace of the
/// claim cleared so the old holder's hash can never match again. Returns the payload fields that
/// the release and expiry events share.
fn requeue(
    op: &mut Op<'_>,
    run: &mut Run,
    task: &mut Task,
    around: Neighbourhood,
) -> Result<Payload> {
    let previous_status = run.status;
    let previous_session = run.session_id.take();
    run.session_token = None;
    run.status = RunStatus::Queued;
    run.claimed_by = None;
    run.claim_token_hash = None;
    run.lease_until = None;
    run.heartbeat_at = None;
    run.claimed_at = None;
    run.started_at = None;
    run.ended_at = None;
    run.error = None;
    run.result = None;
    run.claim_idempotency_key = None;
    op.save_run(task, around, run)?;
    op.work_available = true;
    Ok(Payload::new()
        .set("previous_status", previous_status.as_str())
        .set("status", run.status.as_str())
        .set("task_status", task.status.as_str())
        .opt("session_id", previous_session))
}

/// `POST /api/agent/tasks/{run_id}/release`: back to queued.
pub fn release(op: &mut Op<'_>, run_id: &str, input: &ReleaseInput) -> Result<LeaseSummary> {
    let (mut run, mut task, around) = resolve_lease(op, run_id, true)?.task_around()?;
    let payload = requeue(op, &mut run, &mut task, around)?
        .opt("reason", non_empty(input.reason.as_deref()))
        .build();
    op.record(&mut task, Some(&run.id), "task.run_released", payload)?;
    Ok(LeaseSummary::from(&run))
}

/// The actor and origin recorded on events of lease recovery.
pub fn sweeper_caller() -> Caller {
    Caller {
        actor: Ref::new("daemon", "lease-sweeper"),
        origin: Ref::new("daemon", "tasklane.lease_sweeper"),
        agent_name: None,
        token_name: None,
        role: None,
    }
}

/// What one lease recovery did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Runs whose lease expired and that went back to the queue.
    pub requeued: usize,
    /// Runs failed on their `max_lease_expirations`-th expiry (poison runs).
    pub failed: usize,
}

impl Recovered {
    pub fn total(self) -> usize {
        self.requeued + self.failed
    }
}

/// Recovers up to `limit` runs whose lease has lapsed: each goes back to the queue, or, on its
/// `max_lease_expirations`-th expiry, is failed so a run that crashes its agents cannot loop for
/// ever.
pub fn recover_expired_leases(
    op: &mut Op<'_>,
    limit: i64,
    max_lease_expirations: i64,
    reason: &str,
) -> Result<Recovered> {
    let expired = op.store.expired_leases(op.now, limit)?;
    let mut recovered = Recovered::default();
    for mut run in expired {
        let previous_hash = run.claim_token_hash.clone();
        let previous_until = run.lease_until;
        run.lease_expirations += 1;
        if run.lease_expirations >= max_lease_expirations {
            end_lease(&mut run, RunStatus::Failed, op.now);
            run.error = Some(format!("lease expired {} times", run.lease_expirations));
            run.result = None;
            let extra = hash_payload(&run).set("reason", "lease_expired");
            let around = op.load_task_around(&run.task_id)?;
            finish_failure(op, around, &mut run, None, extra)?;
            recovered.failed += 1;
            continue;
        }
        let (mut task, around) = op.load_task_around(&run.task_id)?;
        let payload = requeue(op, &mut run, &mut task, around)?
            .set("reason", reason)
            .json("lease_until", previous_until)
            .opt("previous_claim_token_hash", previous_hash)
            .opt(
                "coordination_channel_id",
                run.coordination_channel_id.clone(),
            )
            .set("lease_expirations", run.lease_expirations)
            .build();
        op.record(&mut task, Some(&run.id), "task.run_lease_expired", payload)?;
        recovered.requeued += 1;
    }
    Ok(recovered)
}
