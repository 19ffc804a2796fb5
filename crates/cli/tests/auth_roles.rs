//! The role table of token mode walked whole: every role × every operation and every
//! restricted field, each on a fresh fixture where the request would succeed, answers 2xx when the
//! role allows it and 403 `forbidden_role` when it does not. Then the two rules the table exists
//! for: an agent can never make work runnable that awaits or was refused approval, and an agent
//! token never touches a run another token's session leases.
mod common;
mod support_agent;

use std::time::{Duration, Instant};

use common::*;
use support_agent::*;

const Y: bool = true;
const N: bool = false;

/// Every operation of the API, plus the fields only some roles may set.
#[derive(Clone, Copy, Debug)]
enum Op {
    Read,
    ReadMetrics,
    CreateTask,
    CreateTaskWithApprovalPolicy,
    CreateChild,
    CreateChildWithApprovalPolicy,
    UpdateTask,
    UpdateApprovalPolicy,
    DeleteTask,
    PublishTask,
    ApproveTask,
    RejectTask,
    StartTask,
    CancelTask,
    AddDependency,
    RemoveDependency,
    EnqueueRun,
    Triage,
    ClaimRun,
    StartRun,
    AttachSession,
    CompleteRun,
    FailRun,
    CancelRun,
    ClaimNext,
    Heartbeat,
    AgentComplete,
    AgentFail,
    Release,
    ClaimBatch,
    CompleteBatch,
    /// On a task under manual approval (the gated rows of the table).
    UpdateApprovedManualTask,
    DeleteManualTask,
    EnqueueRunAwaitingApproval,
    CreateChildAwaitingApproval,
}

/// What each role may do, as SPEC §2 states it.
#[rustfmt::skip]
const RIGHTS: &[(Op, [bool; 3])] = &[
    //                                   operator agent viewer
    (Op::Read,                           [Y,       Y,    Y]),
    (Op::ReadMetrics,                    [Y,       N,    Y]),
    (Op::CreateTask,                     [Y,       Y,    N]),
    (Op::CreateTaskWithApprovalPolicy,   [Y,       N,    N]),
    (Op::CreateChild,                    [Y,       Y,    N]),
    (Op::CreateChildWithApprovalPolicy,  [Y,       N,    N]),
    (Op::UpdateTask,                     [Y,       Y,    N]),
    (Op::UpdateApprovalPolicy,           [Y,       N,    N]),
    (Op::DeleteTask,                     [Y,       Y,    N]),
    (Op::PublishTask,                    [Y,       Y,    N]),
    (Op::ApproveTask,                    [Y,       N,    N]),
    (Op::RejectTask,                     [Y,       N,    N]),
    (Op::StartTask,                      [Y,       Y,    N]),
    (Op::CancelTask,                     [Y,       Y,    N]),
    (Op::AddDependency,                  [Y,       Y,    N]),
    (Op::RemoveDependency,               [Y,       Y,    N]),
    (Op::EnqueueRun,                     [Y,       Y,    N]),
    (Op::Triage,                         [Y,       Y,    N]),
    (Op::ClaimRun,                       [Y,       N,    N]),
    (Op::StartRun,                       [Y,       N,    N]),
    (Op::AttachSession,                  [Y,       N,    N]),
    (Op::CompleteRun,                    [Y,       N,    N]),
    (Op::FailRun,                        [Y,       N,    N]),
    (Op::CancelRun,                      [Y,       N,    N]),
    (Op::ClaimNext,                      [N,       Y,    N]),
    (Op::Heartbeat,                      [N,       Y,    N]),
    (Op::AgentComplete,                  [N,       Y,    N]),
    (Op::AgentFail,                      [N,       Y,    N]),
    (Op::Release,                        [N,       Y,    N]),
    (Op::ClaimBatch,                     [N,       Y,    N]),
    (Op::CompleteBatch,                  [N,       Y,    N]),
    (Op::UpdateApprovedManualTask,       [Y,       N,    N]),
    (Op::DeleteManualTask,               [Y,       N,    N]),
    (Op::EnqueueRunAwaitingApproval,     [Y,       N,    N]),
    (Op::CreateChildAwaitingApproval,    [Y,       N,    N]),
];

const ROLES: [&str; 3] = ["operator", "agent", "viewer"];

/// A token-mode server with one token per role, plus a second agent token.
struct Fixture {
    srv: Server,
    operator: String,
    agent: String,
    viewer: String,
    other_agent: String,
}

impl Fixture {
    async fn start() -> Fixture {
        let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token")]);
        let db = srv.database().to_string();
        let f = Fixture {
            operator: create_token(&db, "operator", "ops"),
            agent: create_token(&db, "agent", "bot"),
            viewer: create_token(&db, "viewer", "watcher"),
            other_agent: create_token(&db, "agent", "other-bot"),
            srv,
        };
        for token in [&f.operator, &f.agent, &f.viewer, &f.other_agent] {
            f.until_accepted(token).await;
        }
        f
    }

    /// Waits (bounded) until the server accepts a token created by the CLI.
    async fn until_accepted(&self, token: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self
            .call(&bearer(token), Method::GET, "/api/tasks", None)
            .await
            .0
            != StatusCode::OK
        {
            assert!(Instant::now() < deadline, "token never accepted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn call(
        &self,
        headers: &[(&str, String)],
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.srv.call(method, path, body, headers).await
    }

    /// An operator write that must succeed; returns its body.
    async fn setup(&self, method: Method, path: &str, body: Value) -> Value {
        let (s, v) = self
            .call(&bearer(&self.operator), method.clone(), path, Some(body))
            .await;
        assert!(s.is_success(), "setup {method} {path}: {s} {v}");
        v
    }

    /// A task of its own workspace `case`, so claim-next can target it alone.
    async fn task(&self, case: &str, extra: Value) -> String {
        let mut body = json!({"scope": "workspace", "workspace": case, "title": case});
        merge(&mut body, extra);
        id(&self.setup(Method::POST, "/api/tasks", body).await["task"])
    }

    /// A queued run of a new task: (task, run).
    async fn queued(&self, case: &str) -> (String, String) {
        let tid = self.task(case, json!({})).await;
        let v = self
            .setup(Method::POST, &format!("/api/tasks/{tid}/start"), json!({}))
            .await;
        (tid, id(&v["run"]))
    }

    /// A run the operator claimed (and, if `running`, started).
    async fn operator_run(&self, case: &str, running: bool) -> String {
        let (_, rid) = self.queued(case).await;
        self.setup(
            Method::POST,
            &format!("/api/task-runs/{rid}/claim"),
            json!({}),
        )
        .await;
        if running {
            self.setup(
                Method::POST,
                &format!("/api/task-runs/{rid}/start"),
                json!({}),
            )
            .await;
        }
        rid
    }

    /// A run leased by agent token `token` as session `sid`.
    async fn leased(&self, case: &str, token: &str, sid: &str) -> (String, String) {
        let (tid, rid) = self.queued(case).await;
        let claim = expect_claim(
            sid,
            claim_next_with(
                &self.srv,
                &bearer_as(token, sid),
                json!({"workspace_id": case}),
            )
            .await,
        );
        assert_eq!(run_of(&claim), rid);
        (tid, rid)
    }

    /// Builds the state `op` needs and returns the request that performs it.
    async fn request(&self, op: Op, case: &str) -> (Method, String, Option<Value>) {
        let new_task = json!({"scope": "workspace", "workspace": case, "title": "new"});
        let with_policy = json!({"scope": "workspace", "workspace": case, "title": "new",
                                  "approval_policy": "manual"});
        let post = |path: String, body: Value| (Method::POST, path, Some(body));
        match op {
            Op::Read => (
                Method::GET,
                format!("/api/tasks/{}", self.task(case, json!({})).await),
                None,
            ),
            Op::ReadMetrics => (Method::GET, "/metrics".into(), None),
            Op::CreateTask => post("/api/tasks".into(), new_task),
            Op::CreateTaskWithApprovalPolicy => post("/api/tasks".into(), with_policy),
            Op::CreateChild => {
                let tid = self.task(case, json!({})).await;
                post(format!("/api/tasks/{tid}/children"), new_task)
            }
            Op::CreateChildWithApprovalPolicy => {
                let tid = self.task(case, json!({})).await;
                post(format!("/api/tasks/{tid}/children"), with_policy)
            }
            Op::UpdateTask => {
                let tid = self.task(case, json!({})).await;
                (
                    Method::PATCH,
                    format!("/api/tasks/{tid}"),
                    Some(json!({"title": "renamed"})),
                )
            }
            Op::UpdateApprovalPolicy => {
                let tid = self.task(case, json!({"approval_policy": "manual"})).await;
                (
                    Method::PATCH,
                    format!("/api/tasks/{tid}"),
                    Some(json!({"approval_policy": "none"})),
                )
            }
            Op::DeleteTask => {
                let tid = self.task(case, json!({})).await;
                (Method::DELETE, format!("/api/tasks/{tid}"), None)
            }
            Op::PublishTask => {
                let tid = self.task(case, json!({"draft": true})).await;
                post(format!("/api/tasks/{tid}/publish"), json!({}))
            }
            Op::ApproveTask | Op::RejectTask => {
                let tid = self.task(case, json!({"approval_policy": "manual"})).await;
                let action = if matches!(op, Op::ApproveTask) {
                    "approve"
                } else {
                    "reject"
                };
                post(format!("/api/tasks/{tid}/{action}"), json!({}))
            }
            Op::StartTask => {
                let tid = self.task(case, json!({})).await;
                post(format!("/api/tasks/{tid}/start"), json!({}))
            }
            Op::CancelTask => {
                let tid = self.task(case, json!({})).await;
                post(format!("/api/tasks/{tid}/cancel"), json!({}))
            }
            Op::AddDependency | Op::RemoveDependency => {
                let tid = self.task(case, json!({})).await;
                let blocker = self.task(case, json!({})).await;
                if matches!(op, Op::AddDependency) {
                    return post(
                        format!("/api/tasks/{tid}/dependencies"),
                        json!({"depends_on_task_id": blocker}),
                    );
                }
                self.setup(
                    Method::POST,
                    &format!("/api/tasks/{tid}/dependencies"),
                    json!({"depends_on_task_id": blocker}),
                )
                .await;
                (
                    Method::DELETE,
                    format!("/api/tasks/{tid}/dependencies/{blocker}"),
                    None,
                )
            }
            Op::EnqueueRun => {
                let tid = self.task(case, json!({})).await;
                post(
                    format!("/api/tasks/{tid}/runs"),
                    json!({"idempotency_key": case}),
                )
            }
            Op::Triage => {
                let tid = self.task(case, json!({})).await;
                post(format!("/api/tasks/{tid}/triage/read"), json!({}))
            }
            Op::ClaimRun => {
                let (_, rid) = self.queued(case).await;
                post(
                    format!("/api/task-runs/{rid}/claim"),
                    json!({"idempotency_key": case}),
                )
            }
            Op::StartRun => {
                let rid = self.operator_run(case, false).await;
                post(
                    format!("/api/task-runs/{rid}/start"),
                    json!({"idempotency_key": case}),
                )
            }
            Op::AttachSession => {
                let rid = self.operator_run(case, false).await;
                post(
                    format!("/api/task-runs/{rid}/attach-session"),
                    json!({"session_id": case}),
                )
            }
            Op::CompleteRun => {
                let rid = self.operator_run(case, true).await;
                post(format!("/api/task-runs/{rid}/complete"), json!({}))
            }
            Op::FailRun => {
                let rid = self.operator_run(case, true).await;
                post(format!("/api/task-runs/{rid}/fail"), json!({"error": "x"}))
            }
            Op::CancelRun => {
                let (_, rid) = self.queued(case).await;
                post(format!("/api/task-runs/{rid}/cancel"), json!({}))
            }
            Op::ClaimNext => {
                self.queued(case).await;
                post(CLAIM_NEXT.into(), json!({"workspace_id": case}))
            }
            Op::Heartbeat | Op::AgentComplete | Op::AgentFail | Op::Release => {
                // Leased by the agent token as the session the agent role calls with.
                let (_, rid) = self.leased(case, &self.agent, case).await;
                let (action, body) = match op {
                    Op::Heartbeat => ("heartbeat", json!({})),
                    Op::AgentComplete => ("complete", json!({})),
                    Op::AgentFail => ("fail", json!({"error": "x"})),
                    _ => ("release", json!({})),
                };
                post(format!("/api/agent/tasks/{rid}/{action}"), body)
            }
            Op::ClaimBatch => {
                self.queued(case).await;
                post(
                    "/api/agent/tasks/claim-batch".into(),
                    json!({"workspace_id": case, "sessions": [case]}),
                )
            }
            Op::CompleteBatch => {
                let (_, rid) = self.leased(case, &self.agent, case).await;
                post(
                    "/api/agent/tasks/complete-batch".into(),
                    json!({"items": [{"run_id": rid, "session_id": case, "outcome": "completed"}]}),
                )
            }
            Op::UpdateApprovedManualTask => {
                let tid = self.task(case, json!({"approval_policy": "manual"})).await;
                self.setup(
                    Method::POST,
                    &format!("/api/tasks/{tid}/approve"),
                    json!({}),
                )
                .await;
                (
                    Method::PATCH,
                    format!("/api/tasks/{tid}"),
                    Some(json!({"description": "something else"})),
                )
            }
            Op::DeleteManualTask => {
                let tid = self.task(case, json!({"approval_policy": "manual"})).await;
                (Method::DELETE, format!("/api/tasks/{tid}"), None)
            }
            Op::EnqueueRunAwaitingApproval => {
                let tid = self.task(case, json!({"approval_policy": "manual"})).await;
                post(
                    format!("/api/tasks/{tid}/runs"),
                    json!({"idempotency_key": case}),
                )
            }
            Op::CreateChildAwaitingApproval => {
                let tid = self.task(case, json!({"approval_policy": "manual"})).await;
                post(format!("/api/tasks/{tid}/children"), new_task)
            }
        }
    }

    fn headers(&self, role: &str, case: &str) -> Vec<(&'static str, String)> {
        match role {
            "operator" => bearer(&self.operator),
            "agent" => bearer_as(&self.agent, case),
            _ => bearer(&self.viewer),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_role_may_do_exactly_what_the_table_says() {
    let f = Fixture::start().await;
    let mut wrong = Vec::new();
    for (n, (op, allowed)) in RIGHTS.iter().enumerate() {
        for (role, allowed) in ROLES.iter().zip(allowed) {
            let case = format!("case-{n}-{role}");
            let (method, path, body) = f.request(*op, &case).await;
            let (s, v) = f
                .call(&f.headers(role, &case), method.clone(), &path, body)
                .await;
            let ok = if *allowed {
                s.is_success()
            } else {
                s == StatusCode::FORBIDDEN && v["code"] == "forbidden_role"
            };
            if !ok {
                wrong.push(format!(
                    "{role} {op:?} ({method} {path}): expected {}, got {s} {v}",
                    if *allowed {
                        "2xx"
                    } else {
                        "403 forbidden_role"
                    }
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

async fn task_state(f: &Fixture, tid: &str) -> (String, String, String) {
    let (s, v) = f
        .call(
            &bearer(&f.operator),
            Method::GET,
            &format!("/api/tasks/{tid}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t = &v["task"]["task"];
    (
        str_of(t, "approval_policy"),
        str_of(t, "approval_state"),
        str_of(t, "status"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_never_makes_work_runnable_that_awaits_or_was_refused_approval() {
    let f = Fixture::start().await;
    let ag = bearer_as(&f.agent, "worker");
    let pending = f.task("gated", json!({"approval_policy": "manual"})).await;
    let refused = f.task("gated", json!({"approval_policy": "manual"})).await;
    f.setup(
        Method::POST,
        &format!("/api/tasks/{refused}/reject"),
        json!({}),
    )
    .await;
    // An operator's child of a gated task: work beneath the gate all the same.
    let beneath = id(&f
        .setup(
            Method::POST,
            &format!("/api/tasks/{pending}/children"),
            json!({"scope": "workspace", "workspace": "gated", "title": "step"}),
        )
        .await["task"]);

    for (tid, state) in [(&pending, "pending"), (&refused, "rejected")] {
        // Lifting or re-arming the policy is a human's decision.
        for policy in ["none", "manual"] {
            let r = f
                .call(
                    &ag,
                    Method::PATCH,
                    &format!("/api/tasks/{tid}"),
                    Some(json!({"approval_policy": policy})),
                )
                .await;
            assert_err(&r, 403, "forbidden_role");
        }
        // Starting it stays refused.
        let r = f
            .call(
                &ag,
                Method::POST,
                &format!("/api/tasks/{tid}/start"),
                Some(json!({})),
            )
            .await;
        assert_err(&r, 409, "invalid_transition");
        // Nor may it queue a run of it, rewrite it, or delete it (and re-create the id without
        // the gate).
        for (method, path, body) in [
            (
                Method::POST,
                format!("/api/tasks/{tid}/runs"),
                Some(json!({"idempotency_key": tid})),
            ),
            (
                Method::PATCH,
                format!("/api/tasks/{tid}"),
                Some(json!({"title": "something else"})),
            ),
            (Method::DELETE, format!("/api/tasks/{tid}"), None),
        ] {
            let r = f.call(&ag, method, &path, body).await;
            assert_err(&r, 403, "forbidden_role");
        }
        let (s, v) = claim_next_with(&f.srv, &ag, json!({"workspace_id": "gated"})).await;
        assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        assert_eq!(
            task_state(&f, tid).await,
            ("manual".into(), state.into(), "blocked".into())
        );
    }

    // No new work beneath the gate: not a child, not a grandchild, with or without a policy.
    for parent in [&pending, &refused, &beneath] {
        for body in [
            json!({"scope": "workspace", "workspace": "gated", "title": "around"}),
            json!({"scope": "workspace", "workspace": "gated", "title": "around", "approval_policy": "none"}),
        ] {
            let r = f
                .call(
                    &ag,
                    Method::POST,
                    &format!("/api/tasks/{parent}/children"),
                    Some(body),
                )
                .await;
            assert_err(&r, 403, "forbidden_role");
        }
    }

    // Once a human approves, the agent may work beneath it.
    let approved = f.task("open", json!({"approval_policy": "manual"})).await;
    f.setup(
        Method::POST,
        &format!("/api/tasks/{approved}/approve"),
        json!({}),
    )
    .await;
    let (s, v) = f
        .call(
            &ag,
            Method::POST,
            &format!("/api/tasks/{approved}/children"),
            Some(json!({"scope": "workspace", "workspace": "open", "title": "step"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // But not change what the human approved: the approval covers the task as it was.
    let r = f
        .call(
            &ag,
            Method::PATCH,
            &format!("/api/tasks/{approved}"),
            Some(json!({"description": "rm -rf /"})),
        )
        .await;
    assert_err(&r, 403, "forbidden_role");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_the_table_does_not_name_are_for_operators_only() {
    let f = Fixture::start().await;
    for role in ROLES {
        let (s, v) = f
            .call(
                &f.headers(role, "unknown"),
                Method::POST,
                "/api/no-such-endpoint",
                Some(json!({})),
            )
            .await;
        if role == "operator" {
            assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        } else {
            assert_err(&(s, v), 403, "forbidden_role");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_token_never_touches_a_run_another_token_leases() {
    let f = Fixture::start().await;
    let mine = bearer_as(&f.agent, "s-mine");
    let theirs = bearer_as(&f.other_agent, "s-theirs");
    let (tid, rid) = f.leased("leased", &f.agent, "s-mine").await;

    // The operator run paths are not for agents: not on a leased run, not on a queued one.
    let (_, queued) = f.queued("free").await;
    for run in [&rid, &queued] {
        for (action, body) in [
            ("cancel", json!({})),
            ("claim", json!({"idempotency_key": "k"})),
            ("start", json!({"idempotency_key": "k"})),
            ("attach-session", json!({"session_id": "s-theirs"})),
            ("complete", json!({})),
            ("fail", json!({"error": "x"})),
        ] {
            let r = f
                .call(
                    &theirs,
                    Method::POST,
                    &format!("/api/task-runs/{run}/{action}"),
                    Some(body),
                )
                .await;
            assert_err(&r, 403, "forbidden_role");
        }
    }
    // Cancelling the task would cancel the lease with it.
    let r = f
        .call(
            &theirs,
            Method::POST,
            &format!("/api/tasks/{tid}/cancel"),
            Some(json!({})),
        )
        .await;
    assert_err(&r, 403, "foreign_run");
    // The agent API fences on the session, and a session belongs to its token.
    for sid in ["s-theirs", "s-mine"] {
        let r = f
            .call(
                &bearer_as(&f.other_agent, sid),
                Method::POST,
                &format!("/api/agent/tasks/{rid}/complete"),
                Some(json!({})),
            )
            .await;
        assert_err(&r, 409, "no_active_lease");
    }

    let (s, v) = f
        .call(&mine, Method::GET, &format!("/api/task-runs/{rid}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["run"]["run"]["status"], "claimed", "{v}");
    assert_eq!(
        f.call(
            &mine,
            Method::GET,
            &format!("/api/task-runs/{queued}"),
            None
        )
        .await
        .1["run"]["run"]["status"],
        "queued"
    );
    // The holder finishes its own work; its own token may cancel its own task's runs.
    lease_ok_as(&f, &mine, &rid, "complete").await;
    let (tid2, _) = f.leased("mine-too", &f.agent, "s-mine").await;
    let (s, v) = f
        .call(
            &bearer_as(&f.agent, "s-other-of-mine"),
            Method::POST,
            &format!("/api/tasks/{tid2}/cancel"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn lease_ok_as(f: &Fixture, headers: &[(&str, String)], rid: &str, action: &str) {
    let (s, v) = f
        .call(
            headers,
            Method::POST,
            &format!("/api/agent/tasks/{rid}/{action}"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{action}: {v}");
}
