//! Tasklane's records: tasks, runs, dependency edges and events, plus the enums they use.

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::time::Ts;

/// Declares a string enum with its wire names, a parser that trims and lower-cases input (the contract
/// normalizes enum inputs before validating them) and serde serialization as the wire name.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses a wire value after trimming and lower-casing it.
            pub fn parse(input: &str) -> Result<Self> {
                let norm = input.trim().to_ascii_lowercase();
                match norm.as_str() {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(Error::validation(format!(
                        "{} must be one of {}; got {:?}",
                        $what,
                        [$($wire),+].join(", "),
                        input
                    ))),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($wire),+]))
                    .into()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(Scope, "scope" { Global = "global", Workspace = "workspace" });

wire_enum!(
    /// A task's status. The stored status is always the derived one (see `derive`).
    TaskStatus, "status" {
        Draft = "draft",
        Pending = "pending",
        Blocked = "blocked",
        Ready = "ready",
        InProgress = "in_progress",
        Completed = "completed",
        Failed = "failed",
        Canceled = "canceled",
    }
);

wire_enum!(Priority, "priority" { Low = "low", Medium = "medium", High = "high", Urgent = "urgent" });

wire_enum!(ApprovalPolicy, "approval_policy" { None = "none", Manual = "manual" });

wire_enum!(ApprovalState, "approval_state" {
    NotRequired = "not_required",
    Pending = "pending",
    Approved = "approved",
    Rejected = "rejected",
});

wire_enum!(OwnerKind, "owner.kind" {
    Human = "human",
    AgentSession = "agent_session",
    Automation = "automation",
    Extension = "extension",
    NetworkPeer = "network_peer",
    Pool = "pool",
});

wire_enum!(OriginKind, "origin_kind" {
    Cli = "cli",
    Web = "web",
    Uds = "uds",
    Http = "http",
    Automation = "automation",
    Extension = "extension",
    Network = "network",
    AgentSession = "agent_session",
    Daemon = "daemon",
});

wire_enum!(
    /// A run's status. `needs_attention` exists on the wire (filters accept it) but Tasklane never sets it.
    RunStatus, "run status" {
        Queued = "queued",
        Claimed = "claimed",
        Starting = "starting",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Canceled = "canceled",
        NeedsAttention = "needs_attention",
    }
);

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Canceled
        )
    }
}

impl Priority {
    /// Larger is more urgent; used to order claims.
    pub fn rank(self) -> i64 {
        match self {
            Priority::Low => 0,
            Priority::Medium => 1,
            Priority::High => 2,
            Priority::Urgent => 3,
        }
    }
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed | RunStatus::Failed | RunStatus::Canceled
        )
    }

    /// Open runs block a new enqueue and a delete: everything that is not terminal.
    pub fn is_open(self) -> bool {
        !self.is_terminal()
    }

    /// Active runs hold the task's `current_run_id`.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunStatus::Claimed | RunStatus::Starting | RunStatus::Running
        )
    }
}

/// A `{kind, ref}` pair: an actor, an owner or an origin.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ref {
    pub kind: String,
    #[serde(rename = "ref")]
    pub reference: String,
}

impl Ref {
    pub fn new(kind: impl Into<String>, reference: impl Into<String>) -> Self {
        Ref {
            kind: kind.into(),
            reference: reference.into(),
        }
    }
}

/// Who is calling and through what: recorded on every event the call causes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub actor: Ref,
    pub origin: Ref,
    /// The agent name the caller announced, if any (`X-AGH-Agent`).
    pub agent_name: Option<String>,
    /// The name of the API token the caller authenticated with (token mode only).
    pub token_name: Option<String>,
    /// The token's role (token mode only); `None` in open mode, where roles do not apply.
    pub role: Option<Role>,
}

impl Caller {
    pub fn is_human(&self) -> bool {
        self.actor.kind == OwnerKind::Human.as_str()
    }

    /// The caller's agent session id, when the caller is an agent session.
    pub fn session_id(&self) -> Option<&str> {
        (self.actor.kind == OwnerKind::AgentSession.as_str())
            .then_some(self.actor.reference.as_str())
    }

    /// The token an agent session caller acts through: with the session id it names the session,
    /// so two tokens using one session id are two sessions. `None` in open mode.
    pub fn session_token(&self) -> Option<&str> {
        self.session_id().and(self.token_name.as_deref())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Task {
    pub id: String,
    pub identifier: Option<String>,
    pub scope: Scope,
    pub workspace_id: Option<String>,
    pub parent_task_id: Option<String>,
    pub network_channel: Option<String>,
    pub title: String,
    pub description: Option<String>,
    pub priority: Priority,
    pub max_attempts: i64,
    pub auto_enqueue_on_ready: bool,
    pub status: TaskStatus,
    pub approval_policy: ApprovalPolicy,
    pub approval_state: ApprovalState,
    pub owner: Option<Ref>,
    pub current_run_id: Option<String>,
    pub latest_event_seq: i64,
    pub created_by: Ref,
    pub origin: Ref,
    pub created_at: Ts,
    pub updated_at: Ts,
    pub closed_at: Option<Ts>,
    /// Latest activity: the newest of updated_at, run timestamps and event timestamps. Maintained by
    /// the storage layer on every write that touches the task, its runs or its events.
    pub last_activity_at: Ts,
    /// `None` = never set; `Some(Value::Null)` = explicitly set to JSON null.
    pub metadata: Option<Value>,
    pub required_capabilities: Vec<String>,
    pub preferred_capabilities: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: String,
    pub task_id: String,
    pub status: RunStatus,
    pub attempt: i64,
    pub claimed_by: Option<Ref>,
    pub session_id: Option<String>,
    pub origin: Ref,
    pub idempotency_key: Option<String>,
    pub network_channel: Option<String>,
    pub coordination_channel_id: Option<String>,
    pub claim_token_hash: Option<String>,
    pub lease_until: Option<Ts>,
    pub heartbeat_at: Option<Ts>,
    pub lease_expirations: i64,
    pub queued_at: Ts,
    pub claimed_at: Option<Ts>,
    pub started_at: Option<Ts>,
    pub ended_at: Option<Ts>,
    pub error: Option<String>,
    pub metadata: Option<Value>,
    pub result: Option<Value>,
    pub required_capabilities: Vec<String>,
    pub preferred_capabilities: Vec<String>,
    /// The task's priority, copied at enqueue and kept in step by PATCH, so the claim query can
    /// order queued runs from one index.
    pub priority: Priority,
    /// The `idempotency_key` of the claim-next that holds the current lease (internal).
    pub claim_idempotency_key: Option<String>,
    /// The API token whose agent session `session_id` holds or held the lease (token mode;
    /// internal): sessions are namespaced by token, so this and `session_id` name the session.
    pub session_token: Option<String>,
    /// Who may claim the run while it is queued (`claim_audience::of_task` of its task; internal).
    pub claim_audience: Option<String>,
}

impl Run {
    /// The latest of the run's own timestamps, used to rank runs and to compute activity.
    pub fn activity_at(&self) -> Ts {
        [self.claimed_at, self.started_at, self.ended_at]
            .into_iter()
            .flatten()
            .fold(self.queued_at, Ts::max)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Dependency {
    pub task_id: String,
    pub depends_on_task_id: String,
    pub kind: &'static str,
    pub created_at: Ts,
}

/// An event about to be appended; storage assigns its sequence.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// A random id (`ids::event_id`). A log that names events by sequence records
    /// `ids::event_id_of` its sequence instead (see the store's `append_event`).
    pub id: String,
    pub task_id: String,
    pub run_id: Option<String>,
    pub event_type: &'static str,
    pub actor: Ref,
    pub origin: Ref,
    pub payload: Value,
    pub timestamp: Ts,
}

impl NewEvent {
    /// The id the event is recorded under: the name of its sequence in a log that names events
    /// by sequence (the store passes the sequence then), else its random `id`.
    pub fn recorded_id(&self, by_sequence: Option<i64>) -> std::borrow::Cow<'_, str> {
        match by_sequence {
            Some(sequence) => crate::ids::event_id_of(sequence).into(),
            None => self.id.as_str().into(),
        }
    }
}

/// A recorded event of the global, ordered log.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub sequence: i64,
    pub id: String,
    pub task_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub event_type: String,
    pub actor: Ref,
    pub origin: Ref,
    pub payload: Value,
    pub timestamp: Ts,
}

/// The run an idempotency key is bound to, within one origin.
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotencyRecord {
    pub key: String,
    pub origin: Ref,
    pub task_id: String,
    pub run_id: String,
    pub created_at: Ts,
}

wire_enum!(
    /// What an API token may do.
    Role, "role" { Operator = "operator", Agent = "agent", Viewer = "viewer" }
);

/// An API token as stored: only the SHA-256 of the secret is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    /// `sha256:` + lowercase hex of the raw token.
    pub token_hash: String,
    pub created_at: Ts,
    pub last_used_at: Option<Ts>,
}
