//! Which operation of the role table (`tasklane_core::policy`) a request is, and whether the
//! caller's role allows it.

use axum::http::Method;
use tasklane_core::policy::{self, Operation};

use super::{unauthorized, Identity};
use crate::error::ApiError;

/// The operation a request asks for, by method and path; [`Operation::Other`] for any write the
/// table does not name (the router answers unknown paths with 404 or 405 once that is allowed).
pub(super) fn operation(method: &Method, path: &str) -> Operation {
    use Operation::*;
    if method == Method::GET || method == Method::HEAD {
        return if path == "/metrics" {
            ReadMetrics
        } else {
            Read
        };
    }
    let segments: Vec<&str> = path.split('/').collect();
    match (method.as_str(), &segments[..]) {
        ("POST", ["", "api", "tasks"]) => CreateTask,
        ("PATCH", ["", "api", "tasks", _]) => UpdateTask,
        ("DELETE", ["", "api", "tasks", _]) => DeleteTask,
        ("DELETE", ["", "api", "tasks", _, "dependencies", _]) => RemoveDependency,
        ("POST", ["", "api", "tasks", _, "triage", "read" | "dismiss" | "archive"]) => Triage,
        ("POST", ["", "api", "tasks", _, action]) => match *action {
            "publish" => PublishTask,
            "approve" => ApproveTask,
            "reject" => RejectTask,
            "start" => StartTask,
            "cancel" => CancelTask,
            "children" => CreateChild,
            "dependencies" => AddDependency,
            "runs" => EnqueueRun,
            _ => Other,
        },
        ("POST", ["", "api", "task-runs", _, action]) => match *action {
            "claim" => ClaimRun,
            "start" => StartRun,
            "attach-session" => AttachSession,
            "complete" => CompleteRun,
            "fail" => FailRun,
            "cancel" => CancelRun,
            _ => Other,
        },
        ("POST", ["", "api", "agent", "tasks", "claim-next"]) => ClaimNext,
        ("POST", ["", "api", "agent", "tasks", "claim-batch"]) => ClaimBatch,
        ("POST", ["", "api", "agent", "tasks", "complete-batch"]) => CompleteBatch,
        ("POST", ["", "api", "agent", "tasks", _, action]) => match *action {
            "heartbeat" => Heartbeat,
            "complete" => AgentComplete,
            "fail" => AgentFail,
            "release" => Release,
            _ => Other,
        },
        _ => Other,
    }
}

/// Checks the request's operation against the role table; the agent API also needs an agent
/// session in open mode.
pub(super) fn authorize(who: &Identity, op: Operation) -> Result<(), ApiError> {
    if op.is_agent_api() && who.role.is_none() && !who.is_agent() {
        return Err(unauthorized(
            "identity_required",
            "the agent API needs an agent session: send X-AGH-Session-ID",
        ));
    }
    if policy::allows(who.role, op) {
        Ok(())
    } else {
        Err(ApiError(policy::forbidden_role(
            who.role,
            &format!("perform {op:?}"),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasklane_core::model::{Ref, Role};

    fn who(role: Option<Role>, kind: &str) -> Identity {
        Identity {
            actor: Ref::new(kind, "x"),
            agent_name: None,
            role,
            token_name: None,
            revoked: None,
        }
    }

    #[test]
    fn the_agent_api_needs_an_agent_session_in_open_mode() {
        let open_human = who(None, "human");
        let err = authorize(&open_human, Operation::ClaimNext).unwrap_err();
        assert_eq!(err.0.code(), "identity_required");
        assert!(authorize(&who(None, "agent_session"), Operation::ApproveTask).is_ok());
        let op = who(Some(Role::Operator), "human");
        let err = authorize(&op, Operation::ClaimNext).unwrap_err();
        assert_eq!(err.0.code(), "forbidden_role");
    }

    #[test]
    fn operations_follow_method_and_path() {
        use Operation::*;
        for (method, path, want) in [
            (Method::GET, "/api/tasks", Read),
            (Method::GET, "/api/tasks/t/stream", Read),
            (Method::GET, "/metrics", ReadMetrics),
            (Method::POST, "/api/tasks", CreateTask),
            (Method::POST, "/api/tasks/t/approve", ApproveTask),
            (Method::PATCH, "/api/tasks/approve", UpdateTask),
            (Method::POST, "/api/tasks/approve/start", StartTask),
            (Method::DELETE, "/api/tasks/t", DeleteTask),
            (
                Method::DELETE,
                "/api/tasks/t/dependencies/u",
                RemoveDependency,
            ),
            (Method::POST, "/api/tasks/t/triage/archive", Triage),
            (Method::POST, "/api/task-runs/r/cancel", CancelRun),
            (Method::POST, "/api/agent/tasks/claim-next", ClaimNext),
            (Method::POST, "/api/agent/tasks/r/release", Release),
            (Method::POST, "/api/agent/tasks/claim-batch", ClaimBatch),
            (
                Method::POST,
                "/api/agent/tasks/complete-batch",
                CompleteBatch,
            ),
            (Method::POST, "/api/no-such-endpoint", Other),
            (Method::POST, "/api/tasks/t/unknown", Other),
        ] {
            assert_eq!(operation(&method, path), want, "{method} {path}");
        }
    }
}
