//! Row <-> struct mapping on PostgreSQL. The column lists, the stored-enum parsing and the
//! partial-update column sets are the SQLite backend's ([`crate::rows_common`]); this module only
//! reads `postgres::Row`s and lays out statement parameters in column order.
//!
//! Every column is read with `try_get`: a type mismatch must become a storage error, not a panic
//! inside the writer.

use postgres::types::{FromSql, ToSql};
use postgres::Row;
use serde_json::Value;
use tasklane_core::model::{ApiToken, Dependency, Event, IdempotencyRecord, Ref, Run, Task};
use tasklane_core::store::AgentSessionRecord;
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

pub(crate) use crate::rows_common::{
    changed_run_columns, changed_task_columns, dependency_columns, event_columns, payload_text,
    priority_from_rank, run_columns, task_columns, task_param, token_columns,
};
use crate::rows_common::{
    claim_caps, dependency_kind, opt_json_text, parse_json, parse_strings, strings_text, StoredEnum,
};

/// One owned statement parameter; a record's parameters are a `Vec` of them in column order.
pub(crate) type Param<'a> = Box<dyn ToSql + Sync + 'a>;

/// Borrows owned parameters as the slice `Conn` takes.
pub(crate) fn param_refs<'a>(params: &'a [Param<'_>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

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

/// SQL NULL = never set; the text `null` = explicitly JSON null.
fn get_opt_json(row: &Row, idx: usize, what: &str) -> Result<Option<Value>> {
    get::<Option<&str>>(row, idx)?
        .map(|text| parse_json(text, what))
        .transpose()
}

fn get_json(row: &Row, idx: usize, what: &str) -> Result<Value> {
    Ok(get_opt_json(row, idx, what)?.unwrap_or(Value::Null))
}

fn get_strings(row: &Row, idx: usize, what: &str) -> Result<Vec<String>> {
    parse_strings(get::<&str>(row, idx)?, what)
}

/// Reads column `idx` of a row as `T` (a single-column read of a query).
pub(crate) fn column<'r, T: FromSql<'r>>(row: &'r Row, idx: usize) -> Result<T> {
    get(row, idx)
}

/// Maps every row, stopping at the first error.
pub(crate) fn map_rows<T>(rows: Vec<Row>, map: fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(map).collect()
}

// ---------------------------------------------------------------------------------------------
// tasks

/// The task's parameters in [`task_columns!`] order (`$1` = id … `$29`).
pub(crate) fn task_params(t: &Task) -> Vec<Param<'_>> {
    vec![
        Box::new(&t.id),
        Box::new(&t.identifier),
        Box::new(t.scope.as_str()),
        Box::new(&t.workspace_id),
        Box::new(&t.parent_task_id),
        Box::new(&t.network_channel),
        Box::new(&t.title),
        Box::new(&t.description),
        Box::new(t.priority.as_str()),
        Box::new(t.max_attempts),
        Box::new(t.auto_enqueue_on_ready),
        Box::new(t.status.as_str()),
        Box::new(t.approval_policy.as_str()),
        Box::new(t.approval_state.as_str()),
        Box::new(t.owner.as_ref().map(|o| o.kind.as_str())),
        Box::new(t.owner.as_ref().map(|o| o.reference.as_str())),
        Box::new(&t.current_run_id),
        Box::new(t.latest_event_seq),
        Box::new(&t.created_by.kind),
        Box::new(&t.created_by.reference),
        Box::new(&t.origin.kind),
        Box::new(&t.origin.reference),
        Box::new(t.created_at.0),
        Box::new(t.updated_at.0),
        Box::new(t.closed_at.map(|ts| ts.0)),
        Box::new(t.last_activity_at.0),
        Box::new(opt_json_text(&t.metadata)),
        Box::new(strings_text(&t.required_capabilities)),
        Box::new(strings_text(&t.preferred_capabilities)),
    ]
}

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

// ---------------------------------------------------------------------------------------------
// runs

/// The run's parameters in [`run_columns!`] order followed by `claim_caps` (`$1` = id … `$30`).
pub(crate) fn run_params(r: &Run) -> Vec<Param<'_>> {
    vec![
        Box::new(&r.id),
        Box::new(&r.task_id),
        Box::new(r.status.as_str()),
        Box::new(r.attempt),
        Box::new(r.claimed_by.as_ref().map(|c| c.kind.as_str())),
        Box::new(r.claimed_by.as_ref().map(|c| c.reference.as_str())),
        Box::new(&r.session_id),
        Box::new(&r.origin.kind),
        Box::new(&r.origin.reference),
        Box::new(&r.idempotency_key),
        Box::new(&r.network_channel),
        Box::new(&r.coordination_channel_id),
        Box::new(&r.claim_token_hash),
        Box::new(r.lease_until.map(|ts| ts.0)),
        Box::new(r.heartbeat_at.map(|ts| ts.0)),
        Box::new(r.lease_expirations),
        Box::new(r.queued_at.0),
        Box::new(r.claimed_at.map(|ts| ts.0)),
        Box::new(r.started_at.map(|ts| ts.0)),
        Box::new(r.ended_at.map(|ts| ts.0)),
        Box::new(&r.error),
        Box::new(opt_json_text(&r.metadata)),
        Box::new(opt_json_text(&r.result)),
        Box::new(strings_text(&r.required_capabilities)),
        Box::new(strings_text(&r.preferred_capabilities)),
        Box::new(r.priority.rank()),
        Box::new(&r.claim_idempotency_key),
        Box::new(&r.session_token),
        Box::new(&r.claim_audience),
        Box::new(claim_caps(r)),
    ]
}

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

/// A run selected with `claim_caps` after its columns.
pub(crate) fn run_and_claim_caps_from_row(row: &Row) -> Result<(Run, String)> {
    Ok((run_from_row(row)?, get(row, 29)?))
}

// ---------------------------------------------------------------------------------------------
// dependencies, events, idempotency, sessions, tokens

pub(crate) fn dependency_from_row(row: &Row) -> Result<Dependency> {
    Ok(Dependency {
        task_id: get(row, 0)?,
        depends_on_task_id: get(row, 1)?,
        kind: dependency_kind(get::<&str>(row, 2)?)?,
        created_at: get_ts(row, 3)?,
    })
}

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

pub(crate) fn idempotency_from_row(row: &Row) -> Result<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        key: get(row, 0)?,
        origin: get_ref(row, 1, 2)?,
        task_id: get(row, 3)?,
        run_id: get(row, 4)?,
        created_at: get_ts(row, 5)?,
    })
}

pub(crate) fn agent_session_from_row(row: &Row) -> Result<AgentSessionRecord> {
    Ok(AgentSessionRecord {
        session_id: get(row, 0)?,
        agent_name: get(row, 1)?,
        first_seen_at: get_ts(row, 2)?,
        last_seen_at: get_ts(row, 3)?,
        token_name: get::<String>(row, 4).map(|t| (!t.is_empty()).then_some(t))?,
    })
}

pub(crate) fn token_from_row(row: &Row) -> Result<ApiToken> {
    Ok(ApiToken {
        name: get(row, 0)?,
        role: get_enum(row, 1)?,
        token_hash: get(row, 2)?,
        created_at: get_ts(row, 3)?,
        last_used_at: get_opt_ts(row, 4)?,
    })
}
