//! Runs on the operator paths: enqueue, attempts, one open run, idempotency, claim, start, attach,
//! complete, fail, cancel, list, detail.
mod common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_creates_a_queued_run() {
    let srv = Server::start();
    let tid = id(&srv
        .task_with("t", json!({"network_channel": "task-chan"}))
        .await);
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{tid}/runs"),
            json!({"metadata": {"m": 1}}),
        )
        .await;
    assert_status(&(s, v.clone()), 201);
    let r = &v["run"];
    assert!(str_of(r, "id").starts_with("run-"), "{r}");
    assert_eq!(r["task_id"], tid.as_str());
    assert_eq!(r["status"], "queued");
    assert_eq!(r["attempt"], 1);
    assert_eq!(r["origin"], http_origin("enqueue_run"));
    assert_eq!(r["metadata"], json!({"m": 1}));
    assert_eq!(
        r["network_channel"], "task-chan",
        "run inherits the task's channel"
    );
    assert_present(r, "queued_at");
    for k in [
        "claimed_at",
        "started_at",
        "ended_at",
        "session_id",
        "claimed_by",
        "error",
        "result",
        "lease_until",
        "heartbeat_at",
        "claim_token_hash",
        "idempotency_key",
        "coordination_channel_id",
    ] {
        assert_absent(r, k);
    }
    let t = srv.get_task(&tid).await;
    assert_eq!(t["status"], "ready");
    assert_absent(&t, "current_run_id");

    // A channel on the request wins over the task's.
    let t2 = srv.task("t2").await;
    let (_, v) = srv
        .post(
            &format!("/api/tasks/{t2}/runs"),
            json!({"network_channel": "run-chan"}),
        )
        .await;
    assert_eq!(v["run"]["network_channel"], "run-chan");
    assert_err(
        &srv.post(
            &format!("/api/tasks/{t2}/runs"),
            json!({"network_channel": "BAD CHAN"}),
        )
        .await,
        422,
        "validation_failed",
    );
    assert_err(
        &srv.post_empty("/api/tasks/nope/runs").await,
        404,
        "task_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn workspace_runs_get_a_coordination_channel() {
    let srv = Server::start();
    let ws = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "ws1", "title": "w"}))
        .await);
    let r = srv.enqueue(&ws).await;
    let cc = str_of(&r, "coordination_channel_id");
    assert!(!cc.is_empty());
    let ws2 = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "ws1", "title": "w2", "network_channel": "team"}))
        .await);
    let r = srv.enqueue(&ws2).await;
    assert_eq!(r["coordination_channel_id"], "team");
    let g = srv.task("global").await;
    assert_absent(&srv.enqueue(&g).await, "coordination_channel_id");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_open_run_per_task() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let r1 = id(&srv.enqueue(&tid).await);
    for _ in 0..2 {
        assert_err(
            &srv.post_empty(&format!("/api/tasks/{tid}/runs")).await,
            409,
            "open_run_exists",
        );
    }
    srv.claim(&r1).await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/runs")).await,
        409,
        "open_run_exists",
    );
    srv.start_run(&r1).await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/runs")).await,
        409,
        "open_run_exists",
    );
    srv.complete_run(&r1, None).await;
    // A completed task can be enqueued again: attempt 2, task back to ready, closed_at cleared.
    assert_present(&srv.get_task(&tid).await, "closed_at");
    let r2 = srv.enqueue(&tid).await;
    assert_eq!(r2["attempt"], 2);
    let t = srv.get_task(&tid).await;
    assert_eq!(t["status"], "ready");
    assert_absent(&t, "closed_at");
    assert_eq!(srv.runs(&tid, "").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn attempts_and_max_attempts() {
    let srv = Server::start();
    let tid = id(&srv.task_with("flaky", json!({"max_attempts": 2})).await);
    let r1 = srv.fail_task_once(&tid, "first").await;
    assert_eq!(srv.get_run(&r1).await["attempt"], 1);
    let t = srv.get_task(&tid).await;
    assert_eq!(
        t["status"], "ready",
        "budget left: back to ready, no automatic retry"
    );
    assert_eq!(srv.runs(&tid, "").await.len(), 1, "fail does not enqueue");
    let r2 = srv.fail_task_once(&tid, "second").await;
    assert_eq!(srv.get_run(&r2).await["attempt"], 2);
    let t = srv.get_task(&tid).await;
    assert_eq!(t["status"], "failed");
    assert_present(&t, "closed_at");
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/runs")).await,
        409,
        "attempts_exhausted",
    );
    // max_attempts also limits re-running a completed task.
    let once = id(&srv.task_with("once", json!({"max_attempts": 1})).await);
    srv.complete_task(&once).await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{once}/runs")).await,
        409,
        "attempts_exhausted",
    );
    assert_eq!(srv.status_of(&once).await, "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn canceling_a_run_cancels_the_task_for_good() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let r = srv.enqueue(&tid).await;
    let (s, v) = srv
        .post(
            &format!("/api/task-runs/{}/cancel", id(&r)),
            json!({"reason": "changed my mind", "metadata": {"n": 1}}),
        )
        .await;
    assert_status(&(s, v.clone()), 200);
    assert_eq!(v["run"]["status"], "canceled");
    assert_present(&v["run"], "ended_at");
    let t = srv.get_task(&tid).await;
    assert_eq!(t["status"], "canceled");
    assert_present(&t, "closed_at");
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/runs")).await,
        409,
        "invalid_transition",
    );
    // Terminal runs cannot be canceled again.
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{}/cancel", id(&r)))
            .await,
        409,
        "invalid_transition",
    );
    assert_err(
        &srv.post_empty("/api/task-runs/run-nope/cancel").await,
        404,
        "run_not_found",
    );

    // Claimed and running runs can be canceled too.
    for stage in ["claimed", "running"] {
        let t = srv.task(stage).await;
        let rid = id(&srv.enqueue(&t).await);
        srv.claim(&rid).await;
        if stage == "running" {
            srv.start_run(&rid).await;
        }
        assert_eq!(srv.cancel_run(&rid).await["status"], "canceled");
        assert_eq!(srv.status_of(&t).await, "canceled");
        let tp = srv.get_task(&t).await;
        assert_absent(&tp, "current_run_id");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_state_rules() {
    let srv = Server::start();
    // Drafts cannot be enqueued.
    let d = id(&srv.task_with("d", json!({"draft": true})).await);
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{d}/runs")).await,
        409,
        "invalid_transition",
    );
    // Blocked tasks can (the run waits), but the run cannot be claimed until the gate opens.
    let blocker = srv.task("blocker").await;
    let t = srv.task("t").await;
    srv.add_dep(&t, &blocker).await;
    let r = srv.enqueue(&t).await;
    assert_eq!(srv.status_of(&t).await, "blocked");
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{}/claim", id(&r)))
            .await,
        409,
        "invalid_transition",
    );
    srv.complete_task(&blocker).await;
    assert_eq!(srv.status_of(&t).await, "ready");
    assert_eq!(srv.claim(&id(&r)).await["status"], "claimed");
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_idempotency_replay_and_conflict() {
    let srv = Server::start();
    let t1 = srv.task("t1").await;
    let t2 = srv.task("t2").await;
    let path = format!("/api/tasks/{t1}/runs");
    let (s, v1) = srv.post(&path, json!({"idempotency_key": "  k-1 "})).await;
    assert_eq!(s, 201, "{v1}");
    assert_eq!(v1["run"]["idempotency_key"], "k-1");
    let rid = id(&v1["run"]);

    // Same key, same task: the same run, as it is now, and no new event.
    srv.claim(&rid).await;
    let (s, v2) = srv.post(&path, json!({"idempotency_key": "k-1"})).await;
    assert_eq!(s, 201, "{v2}");
    assert_eq!(id(&v2["run"]), rid);
    assert_eq!(v2["run"]["status"], "claimed");
    assert_eq!(srv.runs(&t1, "").await.len(), 1);
    assert_eq!(count_events(&srv.events(&t1).await, "task.run_enqueued"), 1);

    // Same key on another task: conflict.
    assert_err(
        &srv.post(
            &format!("/api/tasks/{t2}/runs"),
            json!({"idempotency_key": "k-1"}),
        )
        .await,
        409,
        "idempotency_key_conflict",
    );
    assert!(srv.runs(&t2, "").await.is_empty());

    // Keys are scoped by origin: the same key on /start is a different scope.
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{t2}/start"),
            json!({"idempotency_key": "k-1"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // Replay after the run finished still returns it.
    srv.start_run(&rid).await;
    srv.complete_run(&rid, None).await;
    let (s, v3) = srv.post(&path, json!({"idempotency_key": "k-1"})).await;
    assert_eq!(s, 201, "{v3}");
    assert_eq!(id(&v3["run"]), rid);
    assert_eq!(v3["run"]["status"], "completed");
    assert_eq!(srv.runs(&t1, "").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_callers_must_send_idempotency_keys() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    assert_err(
        &srv.post_as("sess-1", &format!("/api/tasks/{tid}/runs"), json!({}))
            .await,
        422,
        "validation_failed",
    );
    let (s, v) = srv
        .post_as(
            "sess-1",
            &format!("/api/tasks/{tid}/runs"),
            json!({"idempotency_key": "a-1"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let rid = id(&v["run"]);
    assert_err(
        &srv.post_as("sess-1", &format!("/api/task-runs/{rid}/claim"), json!({}))
            .await,
        422,
        "validation_failed",
    );
    let (s, v) = srv
        .post_as(
            "sess-1",
            &format!("/api/task-runs/{rid}/claim"),
            json!({"idempotency_key": "c-1"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["run"]["claimed_by"], owner("agent_session", "sess-1"));
    assert_err(
        &srv.post_as("sess-1", &format!("/api/task-runs/{rid}/start"), json!({}))
            .await,
        422,
        "validation_failed",
    );
    assert_eq!(srv.get_run(&rid).await["status"], "claimed");
    let (s, v) = srv
        .post_as(
            "sess-1",
            &format!("/api/task-runs/{rid}/start"),
            json!({"idempotency_key": "s-1"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["run"]["status"], "running");
    let ev = srv.events(&tid).await;
    for e in &ev {
        if e["event_type"] != "task.created" {
            assert_eq!(e["actor"], owner("agent_session", "sess-1"), "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_moves_queued_to_claimed() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    let (s, v) = srv.post_empty(&format!("/api/task-runs/{rid}/claim")).await;
    assert_status(&(s, v.clone()), 200);
    let r = &v["run"];
    assert_eq!(r["status"], "claimed");
    assert_eq!(r["claimed_by"], human());
    assert_present(r, "claimed_at");
    assert_absent(r, "lease_until");
    assert_absent(r, "claim_token_hash");
    assert_absent(r, "session_id");
    let t = srv.get_task(&tid).await;
    assert_eq!(t["status"], "ready", "a claimed run leaves the task ready");
    assert_eq!(t["current_run_id"], rid.as_str());

    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{rid}/claim")).await,
        409,
        "invalid_transition",
    );
    assert_err(
        &srv.post_empty("/api/task-runs/run-nope/claim").await,
        404,
        "run_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_owner_guard() {
    let srv = Server::start();
    let pool = id(&srv
        .task_with("pool", json!({"owner": owner("pool", "builders")}))
        .await);
    let rid = id(&srv.enqueue(&pool).await);
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{rid}/claim")).await,
        403,
        "owner_mismatch",
    );
    assert_err(
        &srv.post_as(
            "s1",
            &format!("/api/task-runs/{rid}/claim"),
            json!({"idempotency_key": "k"}),
        )
        .await,
        403,
        "owner_mismatch",
    );
    assert_eq!(srv.get_run(&rid).await["status"], "queued");

    let mine = id(&srv
        .task_with(
            "agent-owned",
            json!({"owner": owner("agent_session", "s1")}),
        )
        .await);
    let rid = id(&srv.enqueue(&mine).await);
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{rid}/claim")).await,
        403,
        "owner_mismatch",
    );
    assert_err(
        &srv.post_as(
            "s2",
            &format!("/api/task-runs/{rid}/claim"),
            json!({"idempotency_key": "k"}),
        )
        .await,
        403,
        "owner_mismatch",
    );
    let (s, v) = srv
        .post_as(
            "s1",
            &format!("/api/task-runs/{rid}/claim"),
            json!({"idempotency_key": "k"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // Other owner kinds do not restrict claims.
    let h = id(&srv
        .task_with("human-owned", json!({"owner": owner("human", "bob")}))
        .await);
    let rid = id(&srv.enqueue(&h).await);
    srv.claim(&rid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn start_run_goes_from_claimed_to_running_in_one_call() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    // Not from queued.
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{rid}/start")).await,
        409,
        "invalid_transition",
    );
    srv.claim(&rid).await;
    let (s, v) = srv.post_empty(&format!("/api/task-runs/{rid}/start")).await;
    assert_status(&(s, v.clone()), 200);
    assert_eq!(v["run"]["status"], "running");
    assert_present(&v["run"], "started_at");
    assert_absent(&v["run"], "session_id");
    let t = srv.get_task(&tid).await;
    assert_eq!(t["status"], "in_progress");
    assert_eq!(t["current_run_id"], rid.as_str());
    // Not again from running.
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{rid}/start")).await,
        409,
        "invalid_transition",
    );
    assert_err(
        &srv.post_empty("/api/task-runs/run-nope/start").await,
        404,
        "run_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_session_then_start_keeps_the_session() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    // Not on a queued run.
    assert_err(
        &srv.post(
            &format!("/api/task-runs/{rid}/attach-session"),
            json!({"session_id": "sess-a"}),
        )
        .await,
        409,
        "invalid_transition",
    );
    srv.claim(&rid).await;
    for body in [
        json!({}),
        json!({"session_id": ""}),
        json!({"session_id": "   "}),
    ] {
        assert_err(
            &srv.post(&format!("/api/task-runs/{rid}/attach-session"), body)
                .await,
            422,
            "validation_failed",
        );
    }
    let (s, v) = srv
        .post(
            &format!("/api/task-runs/{rid}/attach-session"),
            json!({"session_id": " sess-a "}),
        )
        .await;
    assert_status(&(s, v.clone()), 200);
    assert_eq!(v["run"]["status"], "starting");
    assert_eq!(v["run"]["session_id"], "sess-a");
    assert_eq!(srv.status_of(&tid).await, "in_progress");
    // Already bound.
    assert_err(
        &srv.post(
            &format!("/api/task-runs/{rid}/attach-session"),
            json!({"session_id": "sess-b"}),
        )
        .await,
        409,
        "session_already_bound",
    );
    // The session is in use by this active run: another run cannot take it.
    let t2 = srv.task("t2").await;
    let r2 = id(&srv.enqueue(&t2).await);
    srv.claim(&r2).await;
    assert_err(
        &srv.post(
            &format!("/api/task-runs/{r2}/attach-session"),
            json!({"session_id": "sess-a"}),
        )
        .await,
        409,
        "session_in_use",
    );
    // Start from starting: running, session kept.
    let r = srv.start_run(&rid).await;
    assert_eq!(r["status"], "running");
    assert_eq!(r["session_id"], "sess-a");
    // Attach on a running run: not allowed (the run has a session anyway).
    let r = srv
        .post(
            &format!("/api/task-runs/{rid}/attach-session"),
            json!({"session_id": "sess-z"}),
        )
        .await;
    assert_eq!(r.0, 409, "{}", r.1);
    // Once the run ends the session is free again.
    srv.complete_run(&rid, None).await;
    let (s, v) = srv
        .post(
            &format!("/api/task-runs/{r2}/attach-session"),
            json!({"session_id": "sess-a"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_err(
        &srv.post(
            "/api/task-runs/run-nope/attach-session",
            json!({"session_id": "x"}),
        )
        .await,
        404,
        "run_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_records_result_and_closes_the_task() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = srv.running_run(&tid).await;
    let (s, v) = srv
        .post(
            &format!("/api/task-runs/{rid}/complete"),
            json!({"result": {"answer": 42, "list": [1, 2]}}),
        )
        .await;
    assert_status(&(s, v.clone()), 200);
    let r = &v["run"];
    assert_eq!(r["status"], "completed");
    assert_eq!(r["result"], json!({"answer": 42, "list": [1, 2]}));
    assert_present(r, "ended_at");
    assert_absent(r, "error");
    let t = srv.get_task(&tid).await;
    assert_eq!(t["status"], "completed");
    assert_present(&t, "closed_at");
    assert_absent(&t, "current_run_id");
    // Terminal: no further transitions.
    for action in ["complete", "claim", "start", "cancel"] {
        assert_err(
            &srv.post_empty(&format!("/api/task-runs/{rid}/{action}"))
                .await,
            409,
            "invalid_transition",
        );
    }
    assert_err(
        &srv.post(
            &format!("/api/task-runs/{rid}/fail"),
            json!({"error": "late"}),
        )
        .await,
        409,
        "invalid_transition",
    );
    // Complete without a body is allowed (empty body = {}).
    let t2 = srv.task("t2").await;
    let r2 = srv.running_run(&t2).await;
    let (s, v) = srv
        .post_empty(&format!("/api/task-runs/{r2}/complete"))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_absent(&v["run"], "result");
    assert_err(
        &srv.post_empty("/api/task-runs/run-nope/complete").await,
        404,
        "run_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn complete_and_fail_refuse_queued_runs() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{rid}/complete"))
            .await,
        409,
        "invalid_transition",
    );
    assert_err(
        &srv.post(&format!("/api/task-runs/{rid}/fail"), json!({"error": "x"}))
            .await,
        409,
        "invalid_transition",
    );
    assert_eq!(srv.get_run(&rid).await["status"], "queued");
}

#[tokio::test(flavor = "multi_thread")]
async fn fail_records_error_and_validates() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = srv.running_run(&tid).await;
    let path = format!("/api/task-runs/{rid}/fail");
    for body in [json!({}), json!({"error": ""}), json!({"error": "   "})] {
        assert_err(&srv.post(&path, body).await, 422, "validation_failed");
    }
    assert_err(
        &srv.post(&path, json!({"error": 5})).await,
        400,
        "invalid_json",
    );
    assert_err(
        &srv.post(
            &path,
            json!({"error": "x", "metadata": {"claim_token": "abc"}}),
        )
        .await,
        422,
        "validation_failed",
    );
    assert_err(
        &srv.post(
            &path,
            json!({"error": "x", "metadata": {"b": blob(70 * 1024)}}),
        )
        .await,
        413,
        "payload_too_large",
    );
    assert_eq!(srv.get_run(&rid).await["status"], "running");
    let (s, v) = srv
        .post(
            &path,
            json!({"error": "  disk full ", "metadata": {"b": blob(30 * 1024)}}),
        )
        .await;
    assert_status(&(s, v.clone()), 200);
    assert_eq!(v["run"]["status"], "failed");
    assert_eq!(v["run"]["error"], "disk full");
    assert_present(&v["run"], "ended_at");
    assert_absent(&v["run"], "result");
    assert_eq!(srv.status_of(&tid).await, "ready");
    assert_absent(&srv.get_task(&tid).await, "current_run_id");
    assert_err(
        &srv.post("/api/task-runs/run-nope/fail", json!({"error": "x"}))
            .await,
        404,
        "run_not_found",
    );

    // Fail is also allowed from starting (session attached).
    let t2 = srv.task("t2").await;
    let r2 = id(&srv.enqueue(&t2).await);
    srv.claim(&r2).await;
    srv.post(
        &format!("/api/task-runs/{r2}/attach-session"),
        json!({"session_id": "s-x"}),
    )
    .await;
    assert_eq!(
        srv.fail_run(&r2, "could not start").await["status"],
        "failed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn result_limits_and_claim_token_rejection() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = srv.running_run(&tid).await;
    let path = format!("/api/task-runs/{rid}/complete");
    for result in [
        json!({"claim_token": "x"}),
        json!({"nested": {"deeper": [{"CLAIM_TOKEN": "x"}]}}),
        json!([{"claim_token": null}]),
    ] {
        assert_err(
            &srv.post(&path, json!({"result": result})).await,
            422,
            "validation_failed",
        );
    }
    assert_err(
        &srv.post(&path, json!({"result": {"b": blob(70 * 1024)}}))
            .await,
        413,
        "payload_too_large",
    );
    assert_eq!(srv.get_run(&rid).await["status"], "running");
    // 60 KiB fits (the 16 KiB metadata limit does not apply to results).
    let (s, v) = srv
        .post(&path, json!({"result": {"b": blob(60 * 1024)}}))
        .await;
    assert_eq!(s, 200, "{v}");

    // Enqueue metadata: 16 KiB, and no claim_token.
    let t2 = srv.task("t2").await;
    assert_err(
        &srv.post(
            &format!("/api/tasks/{t2}/runs"),
            json!({"metadata": {"b": blob(17 * 1024)}}),
        )
        .await,
        413,
        "payload_too_large",
    );
    assert_err(
        &srv.post(
            &format!("/api/tasks/{t2}/runs"),
            json!({"metadata": {"a": {"claim_token": 1}}}),
        )
        .await,
        422,
        "validation_failed",
    );
    assert!(srv.runs(&t2, "").await.is_empty());
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{t2}/runs"),
            json!({"metadata": {"b": blob(15 * 1024)}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_runs_orders_and_filters() {
    let srv = Server::start();
    let tid = id(&srv.task_with("t", json!({"max_attempts": 5})).await);
    let r1 = srv.fail_task_once(&tid, "one").await;
    let r2 = srv.complete_task(&tid).await;
    let r3 = id(&srv.enqueue(&tid).await);
    srv.claim(&r3).await;
    srv.post(
        &format!("/api/task-runs/{r3}/attach-session"),
        json!({"session_id": "sess-q"}),
    )
    .await;

    let ids = |runs: Vec<Value>| runs.iter().map(id).collect::<Vec<_>>();
    assert_eq!(
        ids(srv.runs(&tid, "").await),
        vec![r3.clone(), r2.clone(), r1.clone()]
    );
    assert_eq!(ids(srv.runs(&tid, "status=failed").await), vec![r1.clone()]);
    assert_eq!(
        ids(srv.runs(&tid, "status=completed").await),
        vec![r2.clone()]
    );
    assert_eq!(
        ids(srv.runs(&tid, "status=starting").await),
        vec![r3.clone()]
    );
    assert!(srv.runs(&tid, "status=needs_attention").await.is_empty());
    assert_eq!(
        ids(srv.runs(&tid, "session_id=sess-q").await),
        vec![r3.clone()]
    );
    assert!(srv.runs(&tid, "session_id=other").await.is_empty());
    assert_eq!(
        ids(srv.runs(&tid, "limit=2").await),
        vec![r3.clone(), r2.clone()]
    );
    assert_eq!(srv.runs(&tid, "limit=0").await.len(), 3);
    let attempts: Vec<i64> = srv
        .runs(&tid, "")
        .await
        .iter()
        .map(|r| r["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![3, 2, 1]);

    for q in ["status=bogus", "limit=-1", "limit=abc"] {
        assert_err(
            &srv.get(&format!("/api/tasks/{tid}/runs?{q}")).await,
            422,
            "validation_failed",
        );
    }
    assert_err(
        &srv.get("/api/tasks/nope/runs").await,
        404,
        "task_not_found",
    );
    let empty = srv.task("empty").await;
    let (s, v) = srv.get(&format!("/api/tasks/{empty}/runs")).await;
    assert_eq!(s, 200);
    assert_eq!(v["runs"], json!([]));

    // The detail view lists runs newest first too.
    let d = srv.detail(&tid).await;
    assert_eq!(ids(d["runs"].as_array().unwrap().clone()), vec![r3, r2, r1]);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_detail_shape() {
    let srv = Server::start();
    let tid = id(&srv
        .task_with("detail", json!({"priority": "high", "identifier": "D-1"}))
        .await);
    let rid = id(&srv.enqueue(&tid).await);
    let (s, v) = srv.get(&format!("/api/task-runs/{rid}")).await;
    assert_status(&(s, v.clone()), 200);
    let d = &v["run"];
    assert_eq!(d["run"]["id"], rid.as_str());
    assert_eq!(d["run"]["status"], "queued");
    assert_eq!(d["task"]["id"], tid.as_str());
    assert_eq!(d["task"]["title"], "detail");
    assert_eq!(d["task"]["status"], "ready");
    assert_eq!(d["task"]["priority"], "high");
    assert_eq!(d["task"]["scope"], "global");
    assert_eq!(d["task"]["identifier"], "D-1");
    assert_absent(d, "session");
    assert_present(&d["summary"], "last_activity_at");
    for k in [
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "total_cost",
        "turn_count",
        "tool_call_count",
    ] {
        assert_absent(&d["summary"], k);
    }

    srv.claim(&rid).await;
    srv.post(
        &format!("/api/task-runs/{rid}/attach-session"),
        json!({"session_id": "sess-d"}),
    )
    .await;
    let (_, v) = srv.get(&format!("/api/task-runs/{rid}")).await;
    assert_eq!(v["run"]["session"]["session_id"], "sess-d");
    assert_eq!(v["run"]["task"]["status"], "in_progress");
    assert_err(
        &srv.get("/api/task-runs/run-nope").await,
        404,
        "run_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_complete_and_fail_refuse_leased_runs() {
    // A run claimed through claim-next needs token-fenced
    // completion; the operator paths answer 409. Cancel still works.
    let srv = Server::start();
    let tid = srv.task("leased").await;
    srv.enqueue(&tid).await;
    let (s, v) = srv
        .post_as("lease-sess", "/api/agent/tasks/claim-next", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let rid = str_of(&v["claim"]["run"], "id");
    assert!(
        str_of(&v["claim"]["run"], "claim_token_hash").starts_with("sha256:"),
        "{v}"
    );
    let r = srv
        .post_empty(&format!("/api/task-runs/{rid}/complete"))
        .await;
    assert_eq!(r.0, 409, "{}", r.1);
    let r = srv
        .post(&format!("/api/task-runs/{rid}/fail"), json!({"error": "x"}))
        .await;
    assert_eq!(r.0, 409, "{}", r.1);
    assert_eq!(srv.get_run(&rid).await["status"], "claimed");
    assert_eq!(srv.cancel_run(&rid).await["status"], "canceled");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_detail_session_reflects_what_tasklane_knows_of_the_agent() {
    // Session = {session_id, agent_name?, state, created_at, updated_at} from the first and
    // last time that agent session called the API.
    let srv = Server::start();
    let headers = vec![
        ("X-AGH-Session-ID", "sess-t".to_string()),
        ("X-AGH-Agent", "builder-bot".to_string()),
    ];
    // The session's first call.
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "by the agent"})),
            &headers,
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let own_task = id(&v["task"]);

    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    let claimed = srv.claim(&rid).await;
    srv.post(
        &format!("/api/task-runs/{rid}/attach-session"),
        json!({"session_id": "sess-t"}),
    )
    .await;
    let (_, d1) = srv.get(&format!("/api/task-runs/{rid}")).await;
    let s1 = d1["run"]["session"].clone();
    assert_eq!(s1["session_id"], "sess-t");
    assert_eq!(s1["agent_name"], "builder-bot");
    assert_present(&s1, "state");
    let created = str_of(&s1, "created_at");
    let updated = str_of(&s1, "updated_at");
    assert!(
        created < str_of(&claimed, "claimed_at"),
        "first call was before the claim: {s1}"
    );
    assert!(created <= updated);

    // A later call by the session moves updated_at, not created_at.
    let (s, v) = srv
        .call(
            Method::PATCH,
            &format!("/api/tasks/{own_task}"),
            Some(json!({"title": "renamed"})),
            &headers,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let after = str_of(&v["task"], "updated_at");
    let (_, d2) = srv.get(&format!("/api/task-runs/{rid}")).await;
    let s2 = &d2["run"]["session"];
    assert_eq!(s2["created_at"], s1["created_at"]);
    assert!(
        str_of(s2, "updated_at") >= after,
        "updated_at must follow the session's last call: {s2} vs {after}"
    );
}
