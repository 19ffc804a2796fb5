//! Row <-> struct mapping. Each record has one column list; statements bind and read columns by
//! position in that list, so INSERT, UPDATE and SELECT cannot drift apart.

use rusqlite::types::ToSql;
use rusqlite::{Row, Statement};
use serde_json::Value;
use tasklane_core::model::{ApiToken, Dependency, Event, IdempotencyRecord, Ref, Run, Task};
use tasklane_core::store::AgentSessionRecord;
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use super::error::{json_err, sql_err};
pub(crate) use crate::rows_common::{
    changed_run_columns, changed_task_columns, dependency_columns, event_columns, payload_text,
    priority_from_rank, run_columns, task_columns, task_param, token_columns,
};
use crate::rows_common::{claim_caps, dependency_kind, opt_json_text, strings_text, StoredEnum};

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, idx: usize) -> Result<T> {
    row.get(idx).map_err(sql_err)
}

/// Borrows a TEXT column without copying it.
fn get_text<'r>(row: &'r Row<'_>, idx: usize) -> Result<&'r str> {
    row.get_ref(idx)
        .map_err(sql_err)?
        .as_str()
        .map_err(|e| Error::Storage(format!("column {idx}: {e}")))
}

fn get_enum<E: StoredEnum>(row: &Row<'_>, idx: usize) -> Result<E> {
    E::from_stored(get_text(row, idx)?)
}

fn get_ts(row: &Row<'_>, idx: usize) -> Result<Ts> {
    get::<i64>(row, idx).map(Ts)
}

fn get_opt_ts(row: &Row<'_>, idx: usize) -> Result<Option<Ts>> {
    Ok(get::<Option<i64>>(row, idx)?.map(Ts))
}

fn get_ref(row: &Row<'_>, kind: usize, reference: usize) -> Result<Ref> {
    Ok(Ref {
        kind: get(row, kind)?,
        reference: get(row, reference)?,
    })
}

/// A `{kind, ref}` pair stored as two nullable columns; absent when the kind is NULL.
fn get_opt_ref(row: &Row<'_>, kind: usize, reference: usize) -> Result<Option<Ref>> {
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
fn get_opt_json(row: &Row<'_>, idx: usize, what: &str) -> Result<Option<Value>> {
    if row.get_ref(idx).map_err(sql_err)? == rusqlite::types::ValueRef::Null {
        return Ok(None);
    }
    serde_json::from_str(get_text(row, idx)?)
        .map(Some)
        .map_err(|e| json_err(what, e))
}

fn get_json(row: &Row<'_>, idx: usize, what: &str) -> Result<Value> {
    Ok(get_opt_json(row, idx, what)?.unwrap_or(Value::Null))
}

fn get_strings(row: &Row<'_>, idx: usize, what: &str) -> Result<Vec<String>> {
    serde_json::from_str(get_text(row, idx)?).map_err(|e| json_err(what, e))
}

/// Binds `?idx`; statements that use only the first parameters of a column list (a partial
/// UPDATE) simply do not receive the later ones.
fn bind<T: ToSql>(stmt: &mut Statement<'_>, idx: usize, value: T) -> Result<()> {
    if idx > stmt.parameter_count() {
        return Ok(());
    }
    stmt.raw_bind_parameter(idx, value).map_err(sql_err)
}

// ---------------------------------------------------------------------------------------------
// tasks

pub(crate) fn bind_task(stmt: &mut Statement<'_>, t: &Task) -> Result<()> {
    bind(stmt, 1, &t.id)?;
    bind(stmt, 2, &t.identifier)?;
    bind(stmt, 3, t.scope.as_str())?;
    bind(stmt, 4, &t.workspace_id)?;
    bind(stmt, 5, &t.parent_task_id)?;
    bind(stmt, 6, &t.network_channel)?;
    bind(stmt, 7, &t.title)?;
    bind(stmt, 8, &t.description)?;
    bind(stmt, 9, t.priority.as_str())?;
    bind(stmt, 10, t.max_attempts)?;
    bind(stmt, 11, t.auto_enqueue_on_ready)?;
    bind(stmt, 12, t.status.as_str())?;
    bind(stmt, 13, t.approval_policy.as_str())?;
    bind(stmt, 14, t.approval_state.as_str())?;
    bind(stmt, 15, t.owner.as_ref().map(|o| o.kind.as_str()))?;
    bind(stmt, 16, t.owner.as_ref().map(|o| o.reference.as_str()))?;
    bind(stmt, 17, &t.current_run_id)?;
    bind(stmt, 18, t.latest_event_seq)?;
    bind(stmt, 19, &t.created_by.kind)?;
    bind(stmt, 20, &t.created_by.reference)?;
    bind(stmt, 21, &t.origin.kind)?;
    bind(stmt, 22, &t.origin.reference)?;
    bind(stmt, 23, t.created_at.0)?;
    bind(stmt, task_param::UPDATED_AT, t.updated_at.0)?;
    bind(stmt, 25, t.closed_at.map(|ts| ts.0))?;
    bind(stmt, 26, t.last_activity_at.0)?;
    bind(stmt, 27, opt_json_text(&t.metadata))?;
    bind(stmt, 28, strings_text(&t.required_capabilities))?;
    bind(stmt, 29, strings_text(&t.preferred_capabilities))?;
    Ok(())
}

pub(crate) fn task_from_row(row: &Row<'_>) -> Result<Task> {
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

pub(crate) fn bind_run(stmt: &mut Statement<'_>, r: &Run) -> Result<()> {
    bind(stmt, 1, &r.id)?;
    bind(stmt, 2, &r.task_id)?;
    bind(stmt, 3, r.status.as_str())?;
    bind(stmt, 4, r.attempt)?;
    bind(stmt, 5, r.claimed_by.as_ref().map(|c| c.kind.as_str()))?;
    bind(stmt, 6, r.claimed_by.as_ref().map(|c| c.reference.as_str()))?;
    bind(stmt, 7, &r.session_id)?;
    bind(stmt, 8, &r.origin.kind)?;
    bind(stmt, 9, &r.origin.reference)?;
    bind(stmt, 10, &r.idempotency_key)?;
    bind(stmt, 11, &r.network_channel)?;
    bind(stmt, 12, &r.coordination_channel_id)?;
    bind(stmt, 13, &r.claim_token_hash)?;
    bind(stmt, 14, r.lease_until.map(|ts| ts.0))?;
    bind(stmt, 15, r.heartbeat_at.map(|ts| ts.0))?;
    bind(stmt, 16, r.lease_expirations)?;
    bind(stmt, 17, r.queued_at.0)?;
    bind(stmt, 18, r.claimed_at.map(|ts| ts.0))?;
    bind(stmt, 19, r.started_at.map(|ts| ts.0))?;
    bind(stmt, 20, r.ended_at.map(|ts| ts.0))?;
    bind(stmt, 21, &r.error)?;
    bind(stmt, 22, opt_json_text(&r.metadata))?;
    bind(stmt, 23, opt_json_text(&r.result))?;
    bind(stmt, 24, strings_text(&r.required_capabilities))?;
    bind(stmt, 25, strings_text(&r.preferred_capabilities))?;
    bind(stmt, 26, r.priority.rank())?;
    bind(stmt, 27, &r.claim_idempotency_key)?;
    bind(stmt, 28, &r.session_token)?;
    bind(stmt, 29, &r.claim_audience)?;
    bind(stmt, 30, claim_caps(r))?;
    Ok(())
}

pub(crate) fn run_from_row(row: &Row<'_>) -> Result<Run> {
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
pub(crate) fn run_and_claim_caps_from_row(row: &Row<'_>) -> Result<(Run, String)> {
    Ok((run_from_row(row)?, get(row, 29)?))
}

// ---------------------------------------------------------------------------------------------
// dependencies, events, idempotency, sessions

pub(crate) fn dependency_from_row(row: &Row<'_>) -> Result<Dependency> {
    Ok(Dependency {
        task_id: get(row, 0)?,
        depends_on_task_id: get(row, 1)?,
        kind: dependency_kind(get_text(row, 2)?)?,
        created_at: get_ts(row, 3)?,
    })
}

pub(crate) fn event_from_row(row: &Row<'_>) -> Result<Event> {
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

pub(crate) fn idempotency_from_row(row: &Row<'_>) -> Result<IdempotencyRecord> {
    Ok(IdempotencyRecord {
        key: get(row, 0)?,
        origin: get_ref(row, 1, 2)?,
        task_id: get(row, 3)?,
        run_id: get(row, 4)?,
        created_at: get_ts(row, 5)?,
    })
}

pub(crate) fn agent_session_from_row(row: &Row<'_>) -> Result<AgentSessionRecord> {
    Ok(AgentSessionRecord {
        session_id: get(row, 0)?,
        agent_name: get(row, 1)?,
        first_seen_at: get_ts(row, 2)?,
        last_seen_at: get_ts(row, 3)?,
        token_name: get::<String>(row, 4).map(|t| (!t.is_empty()).then_some(t))?,
    })
}

/// Runs a query and maps every row, stopping at the first error.
pub(crate) fn collect<T, P: rusqlite::Params>(
    stmt: &mut Statement<'_>,
    params: P,
    map: fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut rows = stmt.query(params).map_err(sql_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql_err)? {
        out.push(map(row)?);
    }
    Ok(out)
}

/// Like [`collect`] for at most one row.
pub(crate) fn first<T, P: rusqlite::Params>(
    stmt: &mut Statement<'_>,
    params: P,
    map: fn(&Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut rows = stmt.query(params).map_err(sql_err)?;
    match rows.next().map_err(sql_err)? {
        Some(row) => map(row).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn token_from_row(row: &Row<'_>) -> Result<ApiToken> {
    Ok(ApiToken {
        name: get(row, 0)?,
        role: get_enum(row, 1)?,
        token_hash: get(row, 2)?,
        created_at: get_ts(row, 3)?,
        last_used_at: get_opt_ts(row, 4)?,
    })
}
