//! Request bodies as clients send them. Every field is optional at this level so that a missing
//! required field is a validation error (422) decided by the rules, while a value of the wrong JSON
//! type fails deserialization (400).

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Keeps "absent" and "null" apart: absent → `None`, `null` → `Some(Value::Null)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OwnerInput {
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::model::OwnerKind>))]
    pub kind: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateTaskInput {
    /// A client-chosen id (at most 128 of `[A-Za-z0-9._:-]`); generated when absent.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:-]{0,128}$"))]
    pub id: Option<String>,
    /// A human-facing identifier, searchable with `query`.
    pub identifier: Option<String>,
    /// `global`, or `workspace` together with `workspace`.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::model::Scope, required = true))]
    pub scope: Option<String>,
    /// The workspace id, with `scope: workspace`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:/-]{1,128}$"))]
    pub workspace: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true, pattern = "\\S"))]
    pub title: Option<String>,
    pub description: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::model::Priority>))]
    pub priority: Option<String>,
    /// Create a draft: nothing runs until it is published.
    pub draft: Option<bool>,
    /// `manual`: a run needs an operator's approval first. Operators only in token mode.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::model::ApprovalPolicy>))]
    pub approval_policy: Option<String>,
    /// Enqueue a run as soon as every blocking dependency has completed.
    pub auto_enqueue_on_ready: Option<bool>,
    /// Runs the task may have in all (default 3).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub max_attempts: Option<i64>,
    /// Any JSON, at most 16 KiB.
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
    /// The coordination channel its runs use.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub network_channel: Option<String>,
    pub owner: Option<OwnerInput>,
    /// Capabilities an agent must offer to claim its runs (1–128 characters each, no whitespace or commas).
    pub required_capabilities: Option<Vec<String>>,
    pub preferred_capabilities: Option<Vec<String>>,
}

/// PATCH: `null` means "no change" for every field.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PatchTaskInput {
    #[cfg_attr(feature = "openapi", schema(pattern = "\\S"))]
    pub title: Option<String>,
    pub description: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::model::Priority>))]
    pub priority: Option<String>,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub max_attempts: Option<i64>,
    pub auto_enqueue_on_ready: Option<bool>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::model::ApprovalPolicy>))]
    pub approval_policy: Option<String>,
    /// Replaces the metadata (any JSON, at most 16 KiB).
    pub metadata: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub network_channel: Option<String>,
    pub owner: Option<OwnerInput>,
    /// `true` removes the owner.
    pub clear_owner: Option<bool>,
    pub required_capabilities: Option<Vec<String>>,
    pub preferred_capabilities: Option<Vec<String>>,
}

/// Body of publish, approve, start and enqueue.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecuteInput {
    /// Binds the run this request enqueues to the key (per origin): a retry with the same key
    /// answers that run. `POST /api/tasks/{id}/runs` requires one from callers that are not humans.
    pub idempotency_key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$"))]
    pub network_channel: Option<String>,
}

/// Body of task cancel and run cancel.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CancelInput {
    pub reason: Option<String>,
    /// Any JSON, at most 64 KiB.
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DependencyInput {
    /// The task that must complete first.
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    pub depends_on_task_id: Option<String>,
    /// Only `blocks` (the default).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^blocks$"))]
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdempotencyInput {
    /// Required from callers that are not humans (an agent session).
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttachSessionInput {
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    pub session_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteInput {
    /// The run's result: any JSON, at most 64 KiB, without a `claim_token` key.
    #[serde(default, deserialize_with = "present")]
    pub result: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailInput {
    /// Why the run failed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, required = true))]
    pub error: Option<String>,
    /// Any JSON, at most 64 KiB.
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimNextInput {
    pub idempotency_key: Option<String>,
    /// Lease length (absent or 0: 300 s).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 86400))]
    pub lease_seconds: Option<i64>,
    /// Lowest task priority to take on the reference's scale: low 10, medium 20, high 30, urgent 40.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub priority_min: Option<i64>,
    /// The capabilities the caller offers (the reference's name for them).
    pub required_capabilities: Option<Vec<String>>,
    /// Park the request until work arrives, up to `wait_seconds`.
    pub wait: Option<bool>,
    /// How long `wait` parks (default 30).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 300))]
    pub wait_seconds: Option<i64>,
    /// Only runs of tasks in this workspace.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._:/-]{1,128}$"))]
    pub workspace_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatInput {
    /// The lease now ends this many seconds from now (absent or 0: 300 s).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 86400))]
    pub lease_seconds: Option<i64>,
}

/// Body of reject; optional, as the reference takes none (a Tasklane extension).
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RejectInput {
    /// Why, for the timeline: recorded in the `task.rejected` event. Trimmed; blank means none;
    /// at most 1000 characters.
    #[cfg_attr(feature = "openapi", schema(max_length = 1000))]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseInput {
    pub reason: Option<String>,
}

/// Body of `claim-batch`: the claim-next fields, and the sessions to claim for.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimBatchInput {
    pub sessions: Option<Vec<String>>,
    pub idempotency_key: Option<String>,
    pub lease_seconds: Option<i64>,
    pub priority_min: Option<i64>,
    pub required_capabilities: Option<Vec<String>>,
    pub wait: Option<bool>,
    pub wait_seconds: Option<i64>,
    pub workspace_id: Option<String>,
}

impl ClaimBatchInput {
    /// The fields every session's claim shares, as claim-next takes them.
    pub fn claim(&self) -> ClaimNextInput {
        ClaimNextInput {
            idempotency_key: self.idempotency_key.clone(),
            lease_seconds: self.lease_seconds,
            priority_min: self.priority_min,
            required_capabilities: self.required_capabilities.clone(),
            wait: self.wait,
            wait_seconds: self.wait_seconds,
            workspace_id: self.workspace_id.clone(),
        }
    }
}

/// Body of `complete-batch`.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportBatchInput {
    pub items: Option<Vec<ReportItemInput>>,
}

/// One lease report of `complete-batch`: the fields of complete, fail or release, with the run
/// and the session that holds its lease.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportItemInput {
    pub run_id: Option<String>,
    pub session_id: Option<String>,
    /// `completed`, `failed` or `released`.
    pub outcome: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub result: Option<Value>,
    pub error: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
    pub reason: Option<String>,
}
