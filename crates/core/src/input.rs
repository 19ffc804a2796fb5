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
pub struct OwnerInput {
    pub kind: Option<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateTaskInput {
    pub id: Option<String>,
    pub identifier: Option<String>,
    pub scope: Option<String>,
    pub workspace: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub priority: Option<String>,
    pub draft: Option<bool>,
    pub approval_policy: Option<String>,
    pub auto_enqueue_on_ready: Option<bool>,
    pub max_attempts: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
    pub network_channel: Option<String>,
    pub owner: Option<OwnerInput>,
    pub required_capabilities: Option<Vec<String>>,
    pub preferred_capabilities: Option<Vec<String>>,
}

/// PATCH: `null` means "no change" for every field.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PatchTaskInput {
    pub title: Option<String>,
    pub description: Option<String>,
    pub priority: Option<String>,
    pub max_attempts: Option<i64>,
    pub auto_enqueue_on_ready: Option<bool>,
    pub approval_policy: Option<String>,
    pub metadata: Option<Value>,
    pub network_channel: Option<String>,
    pub owner: Option<OwnerInput>,
    pub clear_owner: Option<bool>,
    pub required_capabilities: Option<Vec<String>>,
    pub preferred_capabilities: Option<Vec<String>>,
}

/// Body of publish, approve, start and enqueue.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ExecuteInput {
    pub idempotency_key: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
    pub network_channel: Option<String>,
}

/// Body of task cancel and run cancel.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CancelInput {
    pub reason: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct DependencyInput {
    pub depends_on_task_id: Option<String>,
    pub kind: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct IdempotencyInput {
    pub idempotency_key: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct AttachSessionInput {
    pub session_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CompleteInput {
    #[serde(default, deserialize_with = "present")]
    pub result: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct FailInput {
    pub error: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub metadata: Option<Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ClaimNextInput {
    pub idempotency_key: Option<String>,
    pub lease_seconds: Option<i64>,
    pub priority_min: Option<i64>,
    /// The capabilities the caller offers (the reference's name for them).
    pub required_capabilities: Option<Vec<String>>,
    pub wait: Option<bool>,
    pub wait_seconds: Option<i64>,
    pub workspace_id: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct HeartbeatInput {
    pub lease_seconds: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ReleaseInput {
    pub reason: Option<String>,
}

/// Body of `claim-batch`: the claim-next fields, and the sessions to claim for.
#[derive(Clone, Debug, Default, Deserialize)]
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
pub struct ReportBatchInput {
    pub items: Option<Vec<ReportItemInput>>,
}

/// One lease report of `complete-batch`: the fields of complete, fail or release, with the run
/// and the session that holds its lease.
#[derive(Clone, Debug, Default, Deserialize)]
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
