//! The fenced lease operations: heartbeat, complete, fail and release; session-bound run
//! resolution (403 foreign run / 409); the operator paths on leased runs; their events.
mod common;
mod support_agent;

use common::*;
use support_agent::*;

#[tokio::test]
async fn heartbeat_sets_the_lease_to_now_plus_lease_seconds() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "beat", json!({})).await;
    let c = claim(&srv, "s-1", json!({"lease_seconds": 10})).await;
    let hash = hash_of(&c);
    advance(&srv, 8.0).await;
    let now = clock_now(&srv).await;
    let lease = lease_ok(&srv, "s-1", &rid, "heartbeat", json!({"lease_seconds": 20})).await;
    assert_eq!(lease["status"], "claimed", "{lease}");
    assert_eq!(lease["session_id"], "s-1", "{lease}");
    assert_eq!(
        lease["claim_token_hash"], hash,
        "the claim is the same: {lease}"
    );
    assert_eq!(micros(&str_of(&lease, "lease_until")), now + 20 * SECOND);
    assert_eq!(micros(&str_of(&lease, "heartbeat_at")), now);
    // Past the original deadline the lease lives on.
    assert_eq!(advance_recovering(&srv, 15.0).await, 0);
    assert_eq!(run_status(&srv, &rid).await, "claimed");
    // A heartbeat may shorten the lease: it is computed from now, not added.
    let now = clock_now(&srv).await;
    let lease = lease_ok(&srv, "s-1", &rid, "heartbeat", json!({"lease_seconds": 1})).await;
    assert_eq!(micros(&str_of(&lease, "lease_until")), now + SECOND);
    // No lease_seconds: the default 300 s.
    let lease = lease_ok(&srv, "s-1", &rid, "heartbeat", json!({})).await;
    assert_eq!(micros(&str_of(&lease, "lease_until")), now + 300 * SECOND);
    let run = srv.get_run(&rid).await;
    assert_eq!(run["lease_until"], lease["lease_until"], "{run}");

    let beats = run_events(&srv, &tid, "task.run_lease_extended").await;
    assert_eq!(beats.len(), 3);
    let e = &beats[2];
    assert_eq!(e["actor"], session_actor("s-1"), "{e}");
    assert_eq!(e["origin"], http_origin("heartbeat"), "{e}");
    assert_eq!(e["payload"]["status"], "claimed", "{e}");
    assert!(e["payload"]["task_status"].is_string(), "{e}");
    assert_eq!(e["payload"]["lease_until"], lease["lease_until"], "{e}");
    assert_eq!(e["payload"]["claim_token_hash"], hash, "{e}");
}

#[tokio::test]
async fn heartbeat_validates_lease_seconds_before_anything_else() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "beat", json!({})).await;
    claim(&srv, "s-1", json!({"lease_seconds": 10})).await;
    for bad in [-1, 86_401] {
        let r = lease_op(
            &srv,
            "s-1",
            &rid,
            "heartbeat",
            json!({"lease_seconds": bad}),
        )
        .await;
        assert_err(&r, 422, "validation_failed");
    }
    // Validation comes before lease resolution: a session without a lease also gets 422.
    let r = lease_op(
        &srv,
        "s-none",
        &rid,
        "heartbeat",
        json!({"lease_seconds": -5}),
    )
    .await;
    assert_err(&r, 422, "validation_failed");
    // An empty body is `{}`.
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/agent/tasks/{rid}/heartbeat"),
            None,
            &agent("s-1"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn complete_from_claimed_finishes_run_and_task() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "done", json!({})).await;
    let c = claim(&srv, "s-1", json!({})).await;
    let hash = hash_of(&c);
    let result = json!({"answer": 42, "files": ["a.rs"]});
    let lease = lease_ok(&srv, "s-1", &rid, "complete", json!({"result": result})).await;
    assert_eq!(lease["status"], "completed", "{lease}");
    assert_eq!(
        lease["claim_token_hash"], hash,
        "the hash stays for audit: {lease}"
    );
    assert_absent(&lease, "lease_until");
    assert_absent(&lease, "heartbeat_at");

    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["result"], result, "{run}");
    assert_eq!(run["session_id"], "s-1", "{run}");
    assert_eq!(run["claimed_by"], session_actor("s-1"), "{run}");
    assert_eq!(run["claim_token_hash"], hash, "{run}");
    assert_present(&run, "ended_at");
    assert_absent(&run, "lease_until");
    assert_eq!(srv.status_of(&tid).await, "completed");

    let e = the_event(&srv, &tid, "task.run_completed").await;
    assert_eq!(e["actor"], session_actor("s-1"), "{e}");
    assert_eq!(e["origin"], http_origin("agent_complete"), "{e}");
    assert_eq!(e["payload"]["status"], "completed", "{e}");
    assert_eq!(e["payload"]["task_status"], "completed", "{e}");
    assert_eq!(e["payload"]["claim_token_hash"], hash, "{e}");

    // The session is free again, and its finished lease cannot be acted on.
    for op in ["heartbeat", "complete", "release"] {
        let r = lease_op(&srv, "s-1", &rid, op, json!({})).await;
        assert_err(&r, 409, "lease_expired");
    }
    let r = lease_op(&srv, "s-1", &rid, "fail", json!({"error": "late"})).await;
    assert_err(&r, 409, "lease_expired");
    assert_eq!(run_status(&srv, &rid).await, "completed");
}

#[tokio::test]
async fn complete_and_fail_also_work_from_running() {
    let srv = clock_server();
    let (_, a) = queued(&srv, "a", json!({})).await;
    claim(&srv, "s-a", json!({})).await;
    // The operator starts the leased run: claimed -> starting -> running, session kept.
    let started = srv.start_run(&a).await;
    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(started["session_id"], "s-a", "{started}");
    lease_ok(&srv, "s-a", &a, "heartbeat", json!({})).await;
    let lease = lease_ok(&srv, "s-a", &a, "complete", json!({})).await;
    assert_eq!(lease["status"], "completed");

    let (_, b) = queued(&srv, "b", json!({})).await;
    claim(&srv, "s-b", json!({})).await;
    srv.start_run(&b).await;
    let lease = lease_ok(&srv, "s-b", &b, "fail", json!({"error": "broke"})).await;
    assert_eq!(lease["status"], "failed");
}

#[tokio::test]
async fn complete_limits_the_result_and_refuses_claim_tokens() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "big", json!({})).await;
    claim(&srv, "s-1", json!({})).await;
    let r = lease_op(
        &srv,
        "s-1",
        &rid,
        "complete",
        json!({"result": {"blob": blob(65 * 1024)}}),
    )
    .await;
    assert_err(&r, 413, "payload_too_large");
    for result in [
        json!({"claim_token": "x"}),
        json!({"nested": [{"deeper": {"Claim_Token": "x"}}]}),
    ] {
        let r = lease_op(&srv, "s-1", &rid, "complete", json!({"result": result})).await;
        assert_eq!(r.0.as_u16(), 422, "{result}: {r:?}");
    }
    // Still held, and a result just under the limit is fine.
    assert_eq!(run_status(&srv, &rid).await, "claimed");
    let lease = lease_ok(
        &srv,
        "s-1",
        &rid,
        "complete",
        json!({"result": {"blob": blob(60 * 1024)}}),
    )
    .await;
    assert_eq!(lease["status"], "completed");
}

#[tokio::test]
async fn fail_needs_an_error_and_does_not_retry() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "flaky", json!({"max_attempts": 3})).await;
    let c = claim(&srv, "s-1", json!({})).await;
    for body in [json!({}), json!({"error": "   "}), json!({"error": null})] {
        let r = lease_op(&srv, "s-1", &rid, "fail", body.clone()).await;
        assert_eq!(r.0.as_u16(), 422, "{body}: {r:?}");
    }
    let r = lease_op(
        &srv,
        "s-1",
        &rid,
        "fail",
        json!({"error": "x", "metadata": {"claim_token": "y"}}),
    )
    .await;
    assert_eq!(r.0.as_u16(), 422, "{r:?}");
    assert_eq!(run_status(&srv, &rid).await, "claimed");

    let lease = lease_ok(
        &srv,
        "s-1",
        &rid,
        "fail",
        json!({"error": "tests failed", "metadata": {"exit": 1}}),
    )
    .await;
    assert_eq!(lease["status"], "failed", "{lease}");
    assert_eq!(lease["claim_token_hash"], hash_of(&c), "{lease}");
    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"], "tests failed");
    // No automatic retry: no new run, nothing to claim; the task is not failed (attempts left).
    assert_eq!(srv.runs(&tid, "").await.len(), 1);
    claim_nothing(&srv, "s-2", json!({})).await;
    assert_ne!(srv.status_of(&tid).await, "failed");

    let e = the_event(&srv, &tid, "task.run_failed").await;
    assert_eq!(e["actor"], session_actor("s-1"), "{e}");
    assert_eq!(e["origin"], http_origin("agent_fail"), "{e}");
    assert_eq!(e["payload"]["status"], "failed", "{e}");
    assert_eq!(e["payload"]["error"], "tests failed", "{e}");
    assert_eq!(e["payload"]["claim_token_hash"], hash_of(&c), "{e}");
}

#[tokio::test]
async fn failing_the_last_attempt_fails_the_task() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "one shot", json!({"max_attempts": 1})).await;
    claim(&srv, "s-1", json!({})).await;
    lease_ok(&srv, "s-1", &rid, "fail", json!({"error": "no"})).await;
    assert_eq!(srv.status_of(&tid).await, "failed");
}

#[tokio::test]
async fn release_requeues_the_same_run_and_clears_the_claim() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "give back", json!({})).await;
    let before = srv.get_run(&rid).await;
    claim(&srv, "s-1", json!({})).await;
    advance(&srv, 3.0).await;
    let lease = lease_ok(
        &srv,
        "s-1",
        &rid,
        "release",
        json!({"reason": "  wrong toolchain  "}),
    )
    .await;
    assert_eq!(lease["status"], "queued", "{lease}");
    for k in [
        "session_id",
        "claimed_by",
        "claim_token_hash",
        "lease_until",
        "heartbeat_at",
    ] {
        assert_absent(&lease, k);
    }
    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "queued", "{run}");
    assert_eq!(run["attempt"], before["attempt"], "{run}");
    assert_eq!(run["queued_at"], before["queued_at"], "{run}");
    for k in [
        "session_id",
        "claimed_by",
        "claim_token_hash",
        "lease_until",
        "claimed_at",
    ] {
        assert_absent(&run, k);
    }
    assert_eq!(
        srv.runs(&tid, "").await.len(),
        1,
        "release makes no new run"
    );

    let e = the_event(&srv, &tid, "task.run_released").await;
    assert_eq!(e["actor"], session_actor("s-1"), "{e}");
    assert_eq!(e["origin"], http_origin("release"), "{e}");
    let p = &e["payload"];
    assert_eq!(p["previous_status"], "claimed", "{e}");
    assert_eq!(p["status"], "queued", "{e}");
    assert!(p["task_status"].is_string(), "{e}");
    assert_eq!(p["reason"], "wrong toolchain", "{e}");
    assert_eq!(p["session_id"], "s-1", "{e}");

    // The releaser has no lease left on it.
    for op in ["heartbeat", "complete", "release"] {
        assert_err(
            &lease_op(&srv, "s-1", &rid, op, json!({})).await,
            409,
            "no_active_lease",
        );
    }
    // And may claim again, the same run included.
    assert_eq!(run_of(&claim(&srv, "s-1", json!({})).await), rid);
}

#[tokio::test]
async fn release_of_a_running_run_records_its_previous_status() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "running", json!({})).await;
    claim(&srv, "s-1", json!({})).await;
    srv.start_run(&rid).await;
    lease_ok(&srv, "s-1", &rid, "release", json!({})).await;
    let e = the_event(&srv, &tid, "task.run_released").await;
    assert_eq!(e["payload"]["previous_status"], "running", "{e}");
    assert_eq!(run_status(&srv, &rid).await, "queued");
}

#[tokio::test]
async fn resolution_unknown_foreign_and_other_sessions_runs() {
    let srv = clock_server();
    let (_, mine) = queued(&srv, "mine", json!({})).await;
    advance(&srv, 1.0).await;
    let (_, theirs) = queued(&srv, "theirs", json!({})).await;
    advance(&srv, 1.0).await;
    let (_, unclaimed) = queued(&srv, "unclaimed", json!({})).await;
    assert_eq!(run_of(&claim(&srv, "s-me", json!({})).await), mine);
    assert_eq!(run_of(&claim(&srv, "s-them", json!({})).await), theirs);

    let bodies = [
        ("heartbeat", json!({})),
        ("complete", json!({})),
        ("fail", json!({"error": "x"})),
        ("release", json!({})),
    ];
    for (op, body) in &bodies {
        // Unknown run id: 409 no_active_lease for a session without a lease, never 404.
        let r = lease_op(&srv, "s-idle", "run-does-not-exist", op, body.clone()).await;
        assert_err(&r, 409, "no_active_lease");
        // Somebody else's run, caller holds nothing: 409.
        let r = lease_op(&srv, "s-idle", &theirs, op, body.clone()).await;
        assert_err(&r, 409, "no_active_lease");
        // A queued run, caller holds nothing: 409.
        let r = lease_op(&srv, "s-idle", &unclaimed, op, body.clone()).await;
        assert_err(&r, 409, "no_active_lease");
        // The caller holds one live lease on another run: 403 foreign_run.
        let r = lease_op(&srv, "s-me", &theirs, op, body.clone()).await;
        assert_err(&r, 403, "foreign_run");
        let r = lease_op(&srv, "s-me", "run-does-not-exist", op, body.clone()).await;
        assert_err(&r, 403, "foreign_run");
        let r = lease_op(&srv, "s-me", &unclaimed, op, body.clone()).await;
        assert_err(&r, 403, "foreign_run");
    }
    // Nothing moved.
    let run = srv.get_run(&theirs).await;
    assert_eq!(run["status"], "claimed");
    assert_eq!(run["session_id"], "s-them");
    assert_eq!(run_status(&srv, &unclaimed).await, "queued");
    assert_eq!(run_status(&srv, &mine).await, "claimed");
}

#[tokio::test]
async fn operator_complete_and_fail_refuse_leased_runs() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "leased", json!({})).await;
    claim(&srv, "s-1", json!({})).await;
    // Claimed under a lease: the operator paths refuse it whatever its status.
    let r = srv
        .post(&format!("/api/task-runs/{rid}/fail"), json!({"error": "x"}))
        .await;
    assert_err(&r, 409, "lease_required");
    // A session cannot be attached over the lease's session.
    let r = srv
        .post(
            &format!("/api/task-runs/{rid}/attach-session"),
            json!({"session_id": "s-other"}),
        )
        .await;
    assert_eq!(r.0.as_u16(), 409, "{r:?}");
    srv.start_run(&rid).await;
    let r = srv
        .post(&format!("/api/task-runs/{rid}/complete"), json!({}))
        .await;
    assert_err(&r, 409, "lease_required");
    let r = srv
        .post(&format!("/api/task-runs/{rid}/fail"), json!({"error": "x"}))
        .await;
    assert_err(&r, 409, "lease_required");
    assert_eq!(run_status(&srv, &rid).await, "running");
    // Even once finished through the agent path, the run stays token-fenced.
    lease_ok(&srv, "s-1", &rid, "complete", json!({})).await;
    let r = srv
        .post(&format!("/api/task-runs/{rid}/complete"), json!({}))
        .await;
    assert_eq!(r.0.as_u16(), 409, "{r:?}");
}

#[tokio::test]
async fn operator_cancel_of_a_leased_run_fences_the_holder() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "cancel me", json!({})).await;
    claim(&srv, "s-1", json!({})).await;
    srv.cancel_run(&rid).await;
    for op in ["heartbeat", "complete", "release"] {
        let r = lease_op(&srv, "s-1", &rid, op, json!({})).await;
        assert_eq!(r.0.as_u16(), 409, "{op} after cancel: {r:?}");
    }
    assert_eq!(run_status(&srv, &rid).await, "canceled");
    // The session is free again.
    let (_, next) = queued(&srv, "next", json!({})).await;
    assert_eq!(run_of(&claim(&srv, "s-1", json!({})).await), next);
}

#[tokio::test]
async fn completing_a_blocker_through_the_agent_path_auto_enqueues_a_dependent_once() {
    let srv = clock_server();
    let (blocker, brun) = queued(&srv, "blocker", json!({})).await;
    let auto = id(&srv
        .task_with("auto", json!({"auto_enqueue_on_ready": true}))
        .await);
    let manual = srv.task("manual").await;
    srv.add_dep(&auto, &blocker).await;
    srv.add_dep(&manual, &blocker).await;
    assert_eq!(srv.status_of(&auto).await, "blocked");
    claim(&srv, "s-1", json!({})).await;
    lease_ok(&srv, "s-1", &brun, "complete", json!({})).await;

    let runs = srv.runs(&auto, "").await;
    assert_eq!(runs.len(), 1, "exactly one auto-enqueued run: {runs:?}");
    assert_eq!(runs[0]["status"], "queued");
    assert!(srv.runs(&manual, "").await.is_empty());
    assert_eq!(
        count_events(&srv.events(&auto).await, "task.run_enqueued"),
        1
    );
    // It is claimable at once.
    assert_eq!(run_of(&claim(&srv, "s-2", json!({})).await), id(&runs[0]));
}

#[tokio::test]
async fn lease_operations_are_recorded_as_the_calling_session() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "audit", json!({})).await;
    expect_claim(
        "s-audit",
        claim_next_with(&srv, &agent_named("s-audit", "auditors"), json!({})).await,
    );
    lease_ok(&srv, "s-audit", &rid, "heartbeat", json!({})).await;
    lease_ok(&srv, "s-audit", &rid, "complete", json!({})).await;
    let events = srv.events(&tid).await;
    for (ty, action) in [
        ("task.run_claimed", "claim_next"),
        ("task.run_lease_extended", "heartbeat"),
        ("task.run_completed", "agent_complete"),
    ] {
        let e = only_event(&events, ty);
        assert_eq!(e["actor"], session_actor("s-audit"), "{e}");
        assert_eq!(e["origin"], http_origin(action), "{e}");
    }
    // Newest first in the detail view.
    let newest = srv.events_newest_first(&tid).await;
    let pos = |ty: &str| newest.iter().position(|e| e["event_type"] == ty).unwrap();
    assert!(pos("task.run_completed") < pos("task.run_lease_extended"));
    assert!(pos("task.run_lease_extended") < pos("task.run_claimed"));
}
