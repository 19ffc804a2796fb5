//! claim-next with `wait: true`: a parked claim is woken by the write that made work claimable
//! (enqueue, release, expiry, dependency resolution, approval), ignores work it may not take,
//! answers 204 after `wait_seconds`, claims nothing once its client has gone, and ends when the
//! server shuts down.
//!
//! Every waiter is known to be parked before the waking write: [`parked_waiter`] watches the
//! session's last-seen time move on the server, so no test sleeps to synchronize.
mod common;
mod support_agent;

use std::time::Duration;

use common::*;
use support_agent::*;

/// Far above every wait_seconds used: a waiter that is not woken answers 204 first.
const BOUND: u64 = 45;

#[tokio::test]
async fn an_enqueue_wakes_a_parked_claim() {
    let srv = clock_server();
    let probe = probe_session(&srv, "w-1").await;
    let waiter = parked_waiter(&srv, "w-1", &probe, json!({"wait_seconds": 30})).await;
    assert!(!waiter.is_finished(), "nothing to claim yet");
    let tid = srv.task("new work").await;
    let (s, v) = srv
        .post(&format!("/api/tasks/{tid}/start"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rid = id(&v["run"]);
    let c = expect_claim("w-1", answer(waiter, BOUND).await);
    assert_eq!(run_of(&c), rid);
    assert_eq!(run_status(&srv, &rid).await, "claimed");
}

#[tokio::test]
async fn a_release_wakes_a_parked_claim() {
    let srv = clock_server();
    let probe = probe_session(&srv, "w-1").await;
    let (_, rid) = queued(&srv, "held", json!({})).await;
    claim(&srv, "holder", json!({})).await;
    let waiter = parked_waiter(&srv, "w-1", &probe, json!({"wait_seconds": 30})).await;
    lease_ok(&srv, "holder", &rid, "release", json!({})).await;
    assert_eq!(
        run_of(&expect_claim("w-1", answer(waiter, BOUND).await)),
        rid
    );
}

#[tokio::test]
async fn an_expiry_wakes_a_parked_claim() {
    let srv = clock_server();
    let probe = probe_session(&srv, "w-1").await;
    let (_, rid) = queued(&srv, "abandoned", json!({})).await;
    claim(&srv, "crashed", json!({"lease_seconds": 10})).await;
    let waiter = parked_waiter(&srv, "w-1", &probe, json!({"wait_seconds": 30})).await;
    assert_eq!(advance_recovering(&srv, 11.0).await, 1);
    let c = expect_claim("w-1", answer(waiter, BOUND).await);
    assert_eq!(run_of(&c), rid);
}

#[tokio::test]
async fn a_blocker_completing_wakes_a_claim_for_its_dependent() {
    let srv = clock_server();
    let probe = probe_session(&srv, "w-1").await;
    // The waiter cannot take the blocker's run (it lacks the capability), only the dependent's.
    let blocker = id(&srv
        .task_with("blocker", json!({"required_capabilities": ["ops"]}))
        .await);
    let dependent = srv.task("dependent").await;
    srv.add_dep(&dependent, &blocker).await;
    let dep_run = id(&srv.enqueue(&dependent).await);
    let brun = id(&srv.enqueue(&blocker).await);
    let waiter = parked_waiter(&srv, "w-1", &probe, json!({"wait_seconds": 30})).await;
    // An ops agent finishes the blocker through the agent path.
    claim(&srv, "ops-agent", json!({"required_capabilities": ["ops"]})).await;
    lease_ok(&srv, "ops-agent", &brun, "complete", json!({})).await;
    let c = expect_claim("w-1", answer(waiter, BOUND).await);
    assert_eq!(run_of(&c), dep_run);
}

#[tokio::test]
async fn an_approval_wakes_a_parked_claim() {
    let srv = clock_server();
    let probe = probe_session(&srv, "w-1").await;
    let tid = id(&srv
        .task_with("needs approval", json!({"approval_policy": "manual"}))
        .await);
    let waiter = parked_waiter(&srv, "w-1", &probe, json!({"wait_seconds": 30})).await;
    let (s, v) = srv
        .post(&format!("/api/tasks/{tid}/approve"), json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rid = id(&v["run"]);
    assert_eq!(
        run_of(&expect_claim("w-1", answer(waiter, BOUND).await)),
        rid
    );
}

#[tokio::test]
async fn a_waiter_ignores_work_it_may_not_take_and_keeps_waiting() {
    let srv = clock_server();
    let probe = probe_session(&srv, "w-1").await;
    let waiter = parked_waiter(
        &srv,
        "w-1",
        &probe,
        json!({"wait_seconds": 30, "priority_min": 30}),
    )
    .await;
    let (_, low) = queued(&srv, "low", json!({"priority": "low"})).await;
    let (_, gpu) = queued(
        &srv,
        "gpu",
        json!({"priority": "urgent", "required_capabilities": ["gpu"]}),
    )
    .await;
    let (_, theirs) = queued(
        &srv,
        "someone else's",
        json!({"priority": "urgent", "owner": {"kind": "agent_session", "ref": "other"}}),
    )
    .await;
    assert!(!waiter.is_finished());
    let (_, high) = queued(&srv, "high", json!({"priority": "high"})).await;
    assert_eq!(
        run_of(&expect_claim("w-1", answer(waiter, BOUND).await)),
        high
    );
    for rid in [low, gpu, theirs] {
        assert_eq!(run_status(&srv, &rid).await, "queued");
    }
}

#[tokio::test]
async fn each_enqueued_run_goes_to_one_waiter() {
    let srv = clock_server();
    let mut waiters = Vec::new();
    let mut probes = Vec::new();
    for i in 0..3 {
        probes.push(probe_session(&srv, &format!("w-{i}")).await);
    }
    for (i, probe) in probes.iter().enumerate() {
        waiters
            .push(parked_waiter(&srv, &format!("w-{i}"), probe, json!({"wait_seconds": 3})).await);
    }
    let (_, a) = queued(&srv, "a", json!({})).await;
    let (_, b) = queued(&srv, "b", json!({})).await;
    let mut got = Vec::new();
    let mut empty = 0;
    for w in waiters {
        let (s, v) = answer(w, BOUND).await;
        match s.as_u16() {
            200 => got.push(id(&v["claim"]["run"])),
            204 => empty += 1,
            _ => panic!("unexpected answer {s}: {v}"),
        }
    }
    got.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(got, expected, "each run claimed once");
    assert_eq!(empty, 1, "the third waiter timed out empty");
}

#[tokio::test]
async fn wait_seconds_bounds_the_wait_with_204() {
    let srv = clock_server();
    // wait_seconds 0: one attempt, no wait.
    expect_nothing(
        "w-0",
        answer(spawn_waiter(&srv, "w-0", json!({"wait_seconds": 0})), BOUND).await,
    );
    // A short wait that nothing satisfies.
    expect_nothing(
        "w-1",
        answer(spawn_waiter(&srv, "w-1", json!({"wait_seconds": 1})), BOUND).await,
    );
    // Validation still applies to long polls.
    let r = claim_next(&srv, "w-2", json!({"wait": true, "wait_seconds": 301})).await;
    assert_err(&r, 422, "validation_failed");
}

#[tokio::test]
async fn existing_work_is_claimed_at_once_by_a_long_poll() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "ready now", json!({})).await;
    let c = expect_claim(
        "w-1",
        answer(
            spawn_waiter(&srv, "w-1", json!({"wait_seconds": 300})),
            BOUND,
        )
        .await,
    );
    assert_eq!(run_of(&c), rid);
}

#[tokio::test]
async fn a_client_that_disconnects_claims_nothing() {
    let srv = clock_server();
    let probe = probe_session(&srv, "gone").await;
    let waiter = parked_waiter(&srv, "gone", &probe, json!({"wait_seconds": 30})).await;
    // The client gives up on its request.
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    // Work appears afterwards: nobody may claim it on the vanished client's behalf.
    let tid = srv.task("after the disconnect").await;
    let rid = id(&srv.enqueue(&tid).await);
    // Let any (wrongly) surviving waiter act on the wake-up before looking: another write after it.
    srv.task("one more write").await;
    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "queued", "{run}");
    assert_absent(&run, "session_id");
    assert_eq!(count_events(&srv.events(&tid).await, "task.run_claimed"), 0);
    // The session holds no lease and can claim normally.
    assert_eq!(run_of(&claim(&srv, "gone", json!({})).await), rid);
}

#[tokio::test]
async fn a_client_timeout_mid_wait_claims_nothing() {
    let srv = clock_server();
    let probe = probe_session(&srv, "impatient").await;
    let now = micros(&str_of(&advance(&srv, 1.0).await, "now"));
    // A client with its own short timeout; its wait is a legitimate client-side deadline.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = client
        .post(srv.url(CLAIM_NEXT))
        .header("X-AGH-Session-ID", "impatient")
        .json(&json!({"wait": true, "wait_seconds": 30}))
        .send()
        .await;
    assert!(r.is_err(), "the client timed out: {r:?}");
    drop(client);
    // Its request did reach the server.
    assert!(last_seen(&srv, &probe).await >= now);
    let (tid, rid) = queued(&srv, "after the timeout", json!({})).await;
    srv.task("one more write").await;
    assert_eq!(run_status(&srv, &rid).await, "queued");
    assert_eq!(count_events(&srv.events(&tid).await, "task.run_claimed"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_parked_claims() {
    let mut srv = clock_server();
    let probe = probe_session(&srv, "w-1").await;
    let waiter = parked_waiter(&srv, "w-1", &probe, json!({"wait_seconds": 300})).await;
    let status = tokio::task::block_in_place(|| srv.terminate());
    assert!(status.success(), "{status:?}");
    let (s, v) = answer(waiter, BOUND).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
}

// A run can also become claimable for a particular waiter through a PATCH (priority raised above
// its priority_min, owner handed to its pool). The spec's rule is that the wait ends when a
// matching run becomes claimable.

#[tokio::test]
async fn raising_the_priority_of_queued_work_wakes_a_waiter_that_now_matches() {
    let srv = clock_server();
    let probe = probe_session(&srv, "w-1").await;
    let (tid, rid) = queued(&srv, "promoted", json!({"priority": "low"})).await;
    let waiter = parked_waiter(
        &srv,
        "w-1",
        &probe,
        json!({"wait_seconds": 5, "priority_min": 40}),
    )
    .await;
    let (s, v) = srv
        .patch(&format!("/api/tasks/{tid}"), json!({"priority": "urgent"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = answer(waiter, BOUND).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a PATCH that made run {rid} claimable for the waiter should wake it; got {s} {v}"
    );
    assert_eq!(id(&v["claim"]["run"]), rid);
}

#[tokio::test]
async fn handing_queued_work_to_a_pool_wakes_that_pools_waiter() {
    let srv = clock_server();
    let probe = {
        // The probe must be claimed with the agent name the waiter uses.
        let (_, rid) = queued(
            &srv,
            "probe",
            json!({"owner": {"kind": "agent_session", "ref": "w-pool"}}),
        )
        .await;
        expect_claim(
            "w-pool",
            claim_next_with(&srv, &agent_named("w-pool", "builders"), json!({})).await,
        );
        lease_ok(&srv, "w-pool", &rid, "complete", json!({})).await;
        rid
    };
    let (tid, rid) = queued(
        &srv,
        "handed over",
        json!({"owner": {"kind": "human", "ref": "local-user"}}),
    )
    .await;
    let now = micros(&str_of(&advance(&srv, 1.0).await, "now"));
    let waiter = {
        let api = srv.api.clone();
        tokio::spawn(async move {
            claim_next_with(
                &api,
                &agent_named("w-pool", "builders"),
                json!({"wait": true, "wait_seconds": 5}),
            )
            .await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() && last_seen(&srv, &probe).await < now {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{tid}"),
            json!({"owner": {"kind": "pool", "ref": "builders"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = answer(waiter, BOUND).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a PATCH that made run {rid} claimable for the waiter should wake it; got {s} {v}"
    );
    assert_eq!(id(&v["claim"]["run"]), rid);
}
