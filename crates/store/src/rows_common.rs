//! What both backends' row mappings share: the column lists (statements bind and read columns by
//! position in them, so INSERT, UPDATE and SELECT cannot drift apart), the parsing of stored enum
//! names, and the pure computations behind partial updates and claim classes.

use std::cmp::Ordering;

use serde_json::Value;
use tasklane_core::model::{
    ApprovalPolicy, ApprovalState, Dependency, Priority, Role, Run, RunStatus, Scope, Task,
    TaskStatus,
};
use tasklane_core::{Error, Result};

/// Parses the exact stored wire name. Stored values were written with `as_str()`, so there is no
/// need for the input normalization that `parse` does for client input.
pub(crate) trait StoredEnum: Sized + Copy + 'static {
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
pub(crate) fn dependency_kind(s: &str) -> Result<&'static str> {
    match s {
        "blocks" => Ok("blocks"),
        other => Err(Error::Storage(format!(
            "unknown dependency kind {other:?} in database"
        ))),
    }
}

fn json_err(what: &str, err: serde_json::Error) -> Error {
    Error::Storage(format!("stored {what} is not valid JSON: {err}"))
}

/// Parses a stored JSON column.
pub(crate) fn parse_json(text: &str, what: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| json_err(what, e))
}

/// Parses a stored JSON array of strings (capabilities).
pub(crate) fn parse_strings(text: &str, what: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| json_err(what, e))
}

/// JSON text of a value, written straight into a buffer (`to_string` goes through `Display`
/// and a `fmt::Write` adapter). Serializing a `Value` cannot fail: its keys are always strings.
fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_string())
}

pub(crate) fn opt_json_text(v: &Option<Value>) -> Option<String> {
    v.as_ref().map(json_text)
}

pub(crate) fn strings_text(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".to_string())
}

// ---------------------------------------------------------------------------------------------
// tasks

/// Column order shared by SELECT (0-based index) and the `?n` / `$n` parameters (1-based) of
/// writes. A macro rather than a const so statements can be assembled with `concat!` at compile time.
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

/// How many columns [`task_columns!`] names: a query may select more after them.
pub(crate) const TASK_COLUMNS: usize = 29;

/// 1-based parameter positions of the columns that writes treat specially.
pub(crate) mod task_param {
    pub const UPDATED_AT: usize = 24;

    /// Whether a task UPDATE of `changed` (from `changed_task_columns`) writes `updated_at`, and
    /// so raises `last_activity_at` with it.
    pub fn writes_updated_at(changed: &[(&str, usize)]) -> bool {
        changed.iter().any(|(_, idx)| *idx == UPDATED_AT)
    }
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
/// the run's parameter list (the `id` is parameter 1, `claim_caps` parameter 30). `claim_audience` is never among them: only
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

/// The run's capability class: its required and preferred capability sets, sorted, as one JSON
/// text (`[["req",…],["pref",…]]`), so runs asking for the same sets share a claim class. The
/// migration that added the column computes the same text in SQL; a run whose text differed
/// would only form a class of its own, never join a wrong one.
pub(crate) fn claim_caps(r: &Run) -> String {
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

// ---------------------------------------------------------------------------------------------
// dependencies, events, tokens

macro_rules! dependency_columns {
    () => {
        "task_id, depends_on_task_id, kind, created_at"
    };
}
pub(crate) use dependency_columns;

macro_rules! event_columns {
    () => {
        "sequence, id, task_id, run_id, event_type, actor_kind, actor_ref, origin_kind, \
         origin_ref, payload, timestamp"
    };
}
pub(crate) use event_columns;

/// JSON text of an event payload (always present; JSON null is stored as `null`).
pub(crate) fn payload_text(v: &Value) -> String {
    json_text(v)
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

/// A `LIKE … ESCAPE '\'` pattern matching `query` as a substring, its `%`, `_` and `\` taken
/// literally.
pub(crate) fn like_pattern(query: &str) -> String {
    let mut p = String::with_capacity(query.len() + 2);
    p.push('%');
    for c in query.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// The order of `list_tasks`: latest activity first.
pub(crate) fn task_order(a: &Task, b: &Task) -> Ordering {
    b.last_activity_at
        .cmp(&a.last_activity_at)
        .then_with(|| b.updated_at.cmp(&a.updated_at))
        .then_with(|| b.created_at.cmp(&a.created_at))
        .then_with(|| b.id.cmp(&a.id))
}

/// The order of `list_runs`: latest queued first.
pub(crate) fn run_order(a: &Run, b: &Run) -> Ordering {
    b.queued_at.cmp(&a.queued_at).then_with(|| b.id.cmp(&a.id))
}

/// The order of dependency lists: oldest first.
pub(crate) fn dependency_order(a: &Dependency, b: &Dependency) -> Ordering {
    a.created_at
        .cmp(&b.created_at)
        .then_with(|| a.depends_on_task_id.cmp(&b.depends_on_task_id))
        .then_with(|| a.task_id.cmp(&b.task_id))
}
