//! Row <-> struct mapping. Each record has one column list; statements bind and read columns by
//! position in that list, so INSERT, UPDATE and SELECT cannot drift apart.

use rusqlite::types::ToSql;
use rusqlite::{Row, Statement};
use serde_json::Value;
use tasklane_core::model::{
    ApiToken, ApprovalPolicy, ApprovalState, Dependency, Event, IdempotencyRecord, Priority, Ref,
    Role, Run, RunStatus, Scope, Task, TaskStatus,
};
use tasklane_core::store::AgentSessionRecord;
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use super::error::{json_err, sql_err};

/// Parses the exact stored wire name. Stored values were written with `as_str()`, so there is no
/// need for the input normalization that `parse` does for client input.
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
    Role = "token role",
);

/// `Dependency::kind` is `&'static str`, so stored kinds map back onto the known constants.
fn dependency_kind(s: &str) -> Result<&'static str> {
    match s {
        "blocks" => Ok("blocks"),
        other => Err(Error::Storage(format!(
            "unknown dependency kind {other:?} in database"
        ))),
    }
}

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

fn opt_json_text(v: &Option<Value>) -> Option<String> {
    // Serializing a `Value` cannot fail: its keys are always strings.
    v.as_ref().map(|v| v.to_string())
}

fn strings_text(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_string())
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

/// Column order shared by SELECT (0-based index) and the `?n` parameters (1-based) of writes. A
/// macro rather than a const so statements can be assembled with `concat!` at compile time.
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

/// 1-based parameter positions of the columns that writes treat specially.
pub(crate) mod task_param {
    pub const UPDATED_AT: usize = 24;
}

/// The columns `update_task` writes that differ between the stored and the new task, each with
/// its parameter position. Storage-owned columns (`latest_event_seq`, `last_activity_at`) and
/// the immutable id are never listed.
pub(crate) fn changed_task_columns(old: &Task, new: &Task) -> Vec<(&'static str, usize)> {
    let owner = |t: &Task| {
        t.owner
            .as_ref()
            .map(|o| (o.kind.clone(), o.reference.clone()))
    };
    let candidates: [(&'static str, usize, bool); 27] = [
        ("identifier", 2, old.identifier != new.identifier),
        ("scope", 3, old.scope != new.scope),
        ("workspace_id", 4, old.workspace_id != new.workspace_id),
        (
            "parent_task_id",
            5,
            old.parent_task_id != new.parent_task_id,
        ),
        (
            "network_channel",
            6,
            old.network_channel != new.network_channel,
        ),
        ("title", 7, old.title != new.title),
        ("description", 8, old.description != new.description),
        ("priority", 9, old.priority != new.priority),
        ("max_attempts", 10, old.max_attempts != new.max_attempts),
        (
            "auto_enqueue_on_ready",
            11,
            old.auto_enqueue_on_ready != new.auto_enqueue_on_ready,
        ),
        ("status", 12, old.status != new.status),
        (
            "approval_policy",
            13,
            old.approval_policy != new.approval_policy,
        ),
        (
            "approval_state",
            14,
            old.approval_state != new.approval_state,
        ),
        (
            "owner_kind",
            15,
            owner(old).map(|o| o.0) != owner(new).map(|o| o.0),
        ),
        (
            "owner_ref",
            16,
            owner(old).map(|o| o.1) != owner(new).map(|o| o.1),
        ),
        (
            "current_run_id",
            17,
            old.current_run_id != new.current_run_id,
        ),
        (
            "created_by_kind",
            19,
            old.created_by.kind != new.created_by.kind,
        ),
        (
            "created_by_ref",
            20,
            old.created_by.reference != new.created_by.reference,
        ),
        ("origin_kind", 21, old.origin.kind != new.origin.kind),
        (
            "origin_ref",
            22,
            old.origin.reference != new.origin.reference,
        ),
        ("created_at", 23, old.created_at != new.created_at),
        (
            "updated_at",
            task_param::UPDATED_AT,
            old.updated_at != new.updated_at,
        ),
        ("closed_at", 25, old.closed_at != new.closed_at),
        ("metadata", 27, old.metadata != new.metadata),
        (
            "required_capabilities",
            28,
            old.required_capabilities != new.required_capabilities,
        ),
        (
            "preferred_capabilities",
            29,
            old.preferred_capabilities != new.preferred_capabilities,
        ),
        // Present so the list is exhaustive over the column list; never written from here.
        ("latest_event_seq", 18, false),
    ];
    candidates
        .into_iter()
        .filter(|(_, _, changed)| *changed)
        .map(|(column, idx, _)| (column, idx))
        .collect()
}

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

/// The run columns whose value differs between `old` and `new`, with their parameter index in
/// [`bind_run`] (the `id` is parameter 1). `claim_audience` is never among them: only
/// `set_claim_audience` moves it.
pub(crate) fn changed_run_columns(old: &Run, new: &Run) -> Vec<(&'static str, usize)> {
    let claimant = |r: &Run| {
        r.claimed_by
            .as_ref()
            .map(|c| (c.kind.clone(), c.reference.clone()))
    };
    let candidates: [(&'static str, usize, bool); 28] = [
        ("task_id", 2, old.task_id != new.task_id),
        ("status", 3, old.status != new.status),
        ("attempt", 4, old.attempt != new.attempt),
        (
            "claimed_by_kind",
            5,
            claimant(old).map(|c| c.0) != claimant(new).map(|c| c.0),
        ),
        (
            "claimed_by_ref",
            6,
            claimant(old).map(|c| c.1) != claimant(new).map(|c| c.1),
        ),
        ("session_id", 7, old.session_id != new.session_id),
        ("origin_kind", 8, old.origin.kind != new.origin.kind),
        (
            "origin_ref",
            9,
            old.origin.reference != new.origin.reference,
        ),
        (
            "idempotency_key",
            10,
            old.idempotency_key != new.idempotency_key,
        ),
        (
            "network_channel",
            11,
            old.network_channel != new.network_channel,
        ),
        (
            "coordination_channel_id",
            12,
            old.coordination_channel_id != new.coordination_channel_id,
        ),
        (
            "claim_token_hash",
            13,
            old.claim_token_hash != new.claim_token_hash,
        ),
        ("lease_until", 14, old.lease_until != new.lease_until),
        ("heartbeat_at", 15, old.heartbeat_at != new.heartbeat_at),
        (
            "lease_expirations",
            16,
            old.lease_expirations != new.lease_expirations,
        ),
        ("queued_at", 17, old.queued_at != new.queued_at),
        ("claimed_at", 18, old.claimed_at != new.claimed_at),
        ("started_at", 19, old.started_at != new.started_at),
        ("ended_at", 20, old.ended_at != new.ended_at),
        ("error", 21, old.error != new.error),
        ("metadata", 22, old.metadata != new.metadata),
        ("result", 23, old.result != new.result),
        (
            "required_capabilities",
            24,
            old.required_capabilities != new.required_capabilities,
        ),
        (
            "preferred_capabilities",
            25,
            old.preferred_capabilities != new.preferred_capabilities,
        ),
        ("priority_rank", 26, old.priority != new.priority),
        (
            "claim_idempotency_key",
            27,
            old.claim_idempotency_key != new.claim_idempotency_key,
        ),
        ("session_token", 28, old.session_token != new.session_token),
        (
            "claim_caps",
            30,
            old.required_capabilities != new.required_capabilities
                || old.preferred_capabilities != new.preferred_capabilities,
        ),
    ];
    candidates
        .into_iter()
        .filter(|(_, _, changed)| *changed)
        .map(|(column, idx, _)| (column, idx))
        .collect()
}

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

/// The run's capability class: its required and preferred capability sets, sorted, as one JSON
/// text (`[["req",…],["pref",…]]`), so runs asking for the same sets share a claim class. The
/// migration that added the column computes the same text in SQL; a run whose text differed
/// would only form a class of its own, never join a wrong one.
fn claim_caps(r: &Run) -> String {
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    };
    serde_json::to_string(&(
        sorted(&r.required_capabilities),
        sorted(&r.preferred_capabilities),
    ))
    .unwrap_or_default()
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

macro_rules! dependency_columns {
    () => {
        "task_id, depends_on_task_id, kind, created_at"
    };
}
pub(crate) use dependency_columns;

pub(crate) fn dependency_from_row(row: &Row<'_>) -> Result<Dependency> {
    Ok(Dependency {
        task_id: get(row, 0)?,
        depends_on_task_id: get(row, 1)?,
        kind: dependency_kind(get_text(row, 2)?)?,
        created_at: get_ts(row, 3)?,
    })
}

macro_rules! event_columns {
    () => {
        "sequence, id, task_id, run_id, event_type, actor_kind, actor_ref, origin_kind, \
         origin_ref, payload, timestamp"
    };
}
pub(crate) use event_columns;

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

/// JSON text of an event payload (always present; JSON null is stored as `null`).
pub(crate) fn payload_text(v: &Value) -> String {
    v.to_string()
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

pub(crate) fn priority_from_rank(rank: i64) -> Result<Priority> {
    Priority::ALL
        .iter()
        .copied()
        .find(|p| p.rank() == rank)
        .ok_or_else(|| Error::Storage(format!("stored priority rank {rank} is not known")))
}

macro_rules! token_columns {
    () => {
        "name, role, token_hash, created_at, last_used_at"
    };
}
pub(crate) use token_columns;

pub(crate) fn token_from_row(row: &Row<'_>) -> Result<ApiToken> {
    Ok(ApiToken {
        name: get(row, 0)?,
        role: get_enum(row, 1)?,
        token_hash: get(row, 2)?,
        created_at: get_ts(row, 3)?,
        last_used_at: get_opt_ts(row, 4)?,
    })
}
