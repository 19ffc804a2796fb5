//! Row -> struct mapping. Each record has one column list (the SQLite backend's, in the same
//! order); statements read columns by position in that list.

use postgres::types::FromSql;
use postgres::Row;
use serde_json::Value;
use tasklane_core::model::{
    ApprovalPolicy, ApprovalState, Event, Priority, Ref, Run, RunStatus, Scope, Task, TaskStatus,
};
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

/// Parses the exact stored wire name (stored values were written with `as_str()`).
trait StoredEnum: Sized + Copy + 'static {
    const ALL: &'static [Self];
    const WHAT: &'static str;
    fn wire(self) -> &'static str;

    fn from_stored(s: &str) -> Result<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.wire() == s)
            .ok_or_else(|| Error::Storage(format!("unknown {} {s:?} in database", Self::WHAT)))
    }
}

macro_rules! stored_enum {
    ($($ty:ident = $what:literal),+ $(,)?) => {$(
        impl StoredEnum for $ty {
            const ALL: &'static [Self] = $ty::ALL;
            const WHAT: &'static str = $what;
            fn wire(self) -> &'static str {
                self.as_str()
            }
        }
    )+};
}

stored_enum!(
    Scope = "scope",
    TaskStatus = "task status",
    Priority = "priority",
    ApprovalPolicy = "approval policy",
    ApprovalState = "approval state",
    RunStatus = "run status",
);

fn get<'r, T: FromSql<'r>>(row: &'r Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| Error::Storage(format!("column {idx}: {e}")))
}

fn get_enum<E: StoredEnum>(row: &Row, idx: usize) -> Result<E> {
    E::from_stored(get::<&str>(row, idx)?)
}

fn get_ts(row: &Row, idx: usize) -> Result<Ts> {
    get::<i64>(row, idx).map(Ts)
}

fn get_opt_ts(row: &Row, idx: usize) -> Result<Option<Ts>> {
    Ok(get::<Option<i64>>(row, idx)?.map(Ts))
}

fn get_ref(row: &Row, kind: usize, reference: usize) -> Result<Ref> {
    Ok(Ref {
        kind: get(row, kind)?,
        reference: get(row, reference)?,
    })
}

/// A `{kind, ref}` pair stored as two nullable columns; absent when the kind is NULL.
fn get_opt_ref(row: &Row, kind: usize, reference: usize) -> Result<Option<Ref>> {
    let kind: Option<String> = get(row, kind)?;
    match kind {
        None => Ok(None),
        Some(kind) => Ok(Some(Ref {
            kind,
            reference: get::<Option<String>>(row, reference)?.unwrap_or_default(),
        })),
    }
}

fn json_err(what: &str, e: serde_json::Error) -> Error {
    Error::Storage(format!("invalid {what} JSON in database: {e}"))
}

/// SQL NULL = never set; the text `null` = explicitly JSON null.
fn get_opt_json(row: &Row, idx: usize, what: &str) -> Result<Option<Value>> {
    match get::<Option<&str>>(row, idx)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .map_err(|e| json_err(what, e)),
    }
}

fn get_json(row: &Row, idx: usize, what: &str) -> Result<Value> {
    Ok(get_opt_json(row, idx, what)?.unwrap_or(Value::Null))
}

fn get_strings(row: &Row, idx: usize, what: &str) -> Result<Vec<String>> {
    serde_json::from_str(get::<&str>(row, idx)?).map_err(|e| json_err(what, e))
}

fn priority_from_rank(rank: i64) -> Result<Priority> {
    Priority::ALL
        .iter()
        .copied()
        .find(|p| p.rank() == rank)
        .ok_or_else(|| Error::Storage(format!("stored priority rank {rank} is not known")))
}

/// The task columns, in the order [`task_from_row`] reads them.
macro_rules! task_columns {
    () => {
        "id, identifier, scope, workspace_id, parent_task_id, network_channel, title, \
         description, priority, max_attempts, auto_enqueue_on_ready, status, approval_policy, \
         approval_state, owner_kind, owner_ref, current_run_id, latest_event_seq, created_by_kind, \
         created_by_ref, origin_kind, origin_ref, created_at, updated_at, closed_at, \
         last_activity_at, metadata, required_capabilities, preferred_capabilities"
    };
}
pub(crate) use task_columns;

pub(crate) fn task_from_row(row: &Row) -> Result<Task> {
    Ok(Task {
        id: get(row, 0)?,
        identifier: get(row, 1)?,
        scope: get_enum(row, 2)?,
        workspace_id: get(row, 3)?,
        parent_task_id: get(row, 4)?,
        network_channel: get(row, 5)?,
        title: get(row, 6)?,
        description: get(row, 7)?,
        priority: get_enum(row, 8)?,
        max_attempts: get(row, 9)?,
        auto_enqueue_on_ready: get(row, 10)?,
        status: get_enum(row, 11)?,
        approval_policy: get_enum(row, 12)?,
        approval_state: get_enum(row, 13)?,
        owner: get_opt_ref(row, 14, 15)?,
        current_run_id: get(row, 16)?,
        latest_event_seq: get(row, 17)?,
        created_by: get_ref(row, 18, 19)?,
        origin: get_ref(row, 20, 21)?,
        created_at: get_ts(row, 22)?,
        updated_at: get_ts(row, 23)?,
        closed_at: get_opt_ts(row, 24)?,
        last_activity_at: get_ts(row, 25)?,
        metadata: get_opt_json(row, 26, "task metadata")?,
        required_capabilities: get_strings(row, 27, "task required_capabilities")?,
        preferred_capabilities: get_strings(row, 28, "task preferred_capabilities")?,
    })
}

/// The run columns, in the order [`run_from_row`] reads them.
macro_rules! run_columns {
    () => {
        "id, task_id, status, attempt, claimed_by_kind, claimed_by_ref, session_id, origin_kind, \
         origin_ref, idempotency_key, network_channel, coordination_channel_id, claim_token_hash, \
         lease_until, heartbeat_at, lease_expirations, queued_at, claimed_at, started_at, \
         ended_at, error, metadata, result, required_capabilities, preferred_capabilities, \
         priority_rank, claim_idempotency_key, session_token, claim_audience"
    };
}
pub(crate) use run_columns;

pub(crate) fn run_from_row(row: &Row) -> Result<Run> {
    Ok(Run {
        id: get(row, 0)?,
        task_id: get(row, 1)?,
        status: get_enum(row, 2)?,
        attempt: get(row, 3)?,
        claimed_by: get_opt_ref(row, 4, 5)?,
        session_id: get(row, 6)?,
        origin: get_ref(row, 7, 8)?,
        idempotency_key: get(row, 9)?,
        network_channel: get(row, 10)?,
        coordination_channel_id: get(row, 11)?,
        claim_token_hash: get(row, 12)?,
        lease_until: get_opt_ts(row, 13)?,
        heartbeat_at: get_opt_ts(row, 14)?,
        lease_expirations: get(row, 15)?,
        queued_at: get_ts(row, 16)?,
        claimed_at: get_opt_ts(row, 17)?,
        started_at: get_opt_ts(row, 18)?,
        ended_at: get_opt_ts(row, 19)?,
        error: get(row, 20)?,
        metadata: get_opt_json(row, 21, "run metadata")?,
        result: get_opt_json(row, 22, "run result")?,
        required_capabilities: get_strings(row, 23, "run required_capabilities")?,
        preferred_capabilities: get_strings(row, 24, "run preferred_capabilities")?,
        priority: priority_from_rank(get(row, 25)?)?,
        claim_idempotency_key: get(row, 26)?,
        session_token: get(row, 27)?,
        claim_audience: get(row, 28)?,
    })
}

/// The event columns, in the order [`event_from_row`] reads them.
macro_rules! event_columns {
    () => {
        "sequence, id, task_id, run_id, event_type, actor_kind, actor_ref, origin_kind, \
         origin_ref, payload, timestamp"
    };
}
pub(crate) use event_columns;

pub(crate) fn event_from_row(row: &Row) -> Result<Event> {
    Ok(Event {
        sequence: get(row, 0)?,
        id: get(row, 1)?,
        task_id: get(row, 2)?,
        run_id: get(row, 3)?,
        event_type: get(row, 4)?,
        actor: get_ref(row, 5, 6)?,
        origin: get_ref(row, 7, 8)?,
        payload: get_json(row, 9, "event payload")?,
        timestamp: get_ts(row, 10)?,
    })
}
