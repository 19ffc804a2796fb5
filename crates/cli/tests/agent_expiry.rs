//! Lease expiry: strict deadlines, requeue with `task.run_lease_expired`, fencing of a stale
//! holder, poison runs failed on the Nth expiry (`--max-lease-expirations`), the background sweep
//! on the real clock, and start-up recovery of leases that expired while the server was down.
mod common;
mod support_agent;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use support_agent::*;

#[tokio::test]
async fn a_lease_expires_exactly_at_lease_until_and_the_run_is_requeued() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "expiring", json!({})).await;
    let c = claim(&srv, "s-1", json!({"lease_seconds": 10})).await;
    let before = srv.get_run(&rid).await;

    // Not yet: lease_until > now.
    assert_eq!(advance_recovering(&srv, 9.5).await, 0);
    assert_eq!(run_status(&srv, &rid).await, "claimed");
    // At lease_until the lease is no longer live.
    assert_eq!(advance_recovering(&srv, 0.5).await, 1);
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

    let e = the_event(&srv, &tid, "task.run_lease_expired").await;
    let p = &e["payload"];
    assert_eq!(e["run_id"], rid, "{e}");
    assert_eq!(p["previous_status"], "claimed", "{e}");
    assert_eq!(p["status"], "queued", "{e}");
    assert!(p["task_status"].is_string(), "{e}");
    assert!(p["reason"].is_string(), "{e}");
    assert_eq!(p["session_id"], "s-1", "{e}");
    assert_eq!(p["lease_until"], c["lease"]["lease_until"], "{e}");
    assert_eq!(p["previous_claim_token_hash"], hash_of(&c), "{e}");
    assert_eq!(p["lease_expirations"], 1, "{e}");
    assert_ne!(
        e["actor"],
        session_actor("s-1"),
        "recovery is not the agent's act: {e}"
    );

    // The holder is fenced, and the session is free to claim again.
    assert_err(
        &lease_op(&srv, "s-1", &rid, "heartbeat", json!({})).await,
        409,
        "no_active_lease",
    );
    let again = claim(&srv, "s-1", json!({})).await;
    assert_eq!(run_of(&again), rid);
    assert_ne!(hash_of(&again), hash_of(&c), "a new claim, a new token");
}

#[tokio::test]
async fn a_stale_holder_after_expiry_cannot_touch_the_new_claim() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "contested", json!({})).await;
    let old = claim(&srv, "s-old", json!({"lease_seconds": 10})).await;
    assert_eq!(advance_recovering(&srv, 11.0).await, 1);
    let new = claim(&srv, "s-new", json!({"lease_seconds": 60})).await;
    assert_eq!(run_of(&new), rid);
    assert_ne!(hash_of(&new), hash_of(&old));

    for (op, body) in [
        ("heartbeat", json!({"lease_seconds": 3600})),
        ("complete", json!({"result": {"stale": true}})),
        ("fail", json!({"error": "stale"})),
        ("release", json!({"reason": "stale"})),
    ] {
        let r = lease_op(&srv, "s-old", &rid, op, body).await;
        assert_err(&r, 409, "no_active_lease");
    }

    // The new claim is intact.
    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "claimed", "{run}");
    assert_eq!(run["session_id"], "s-new", "{run}");
    assert_eq!(run["claimed_by"], session_actor("s-new"), "{run}");
    assert_eq!(
        run["claim_token_hash"], new["lease"]["claim_token_hash"],
        "{run}"
    );
    assert_eq!(run["lease_until"], new["lease"]["lease_until"], "{run}");
    assert_absent(&run, "result");
    let events = srv.events(&tid).await;
    assert_eq!(count_events(&events, "task.run_lease_extended"), 0);
    assert_eq!(count_events(&events, "task.run_released"), 0);
    assert_eq!(count_events(&events, "task.run_completed"), 0);

    // Once the old holder has a new lease elsewhere, the old run is a foreign run to it.
    let (_, other) = queued(&srv, "other", json!({})).await;
    assert_eq!(run_of(&claim(&srv, "s-old", json!({})).await), other);
    let r = lease_op(&srv, "s-old", &rid, "complete", json!({})).await;
    assert_err(&r, 403, "foreign_run");

    // The new holder finishes normally.
    lease_ok(&srv, "s-new", &rid, "heartbeat", json!({})).await;
    let lease = lease_ok(&srv, "s-new", &rid, "complete", json!({})).await;
    assert_eq!(lease["claim_token_hash"], new["lease"]["claim_token_hash"]);
    assert_eq!(srv.status_of(&tid).await, "completed");
}

#[tokio::test]
async fn a_heartbeat_keeps_a_lease_alive_past_its_first_deadline() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "kept alive", json!({})).await;
    claim(&srv, "s-1", json!({"lease_seconds": 10})).await;
    for _ in 0..5 {
        assert_eq!(advance_recovering(&srv, 9.0).await, 0);
        lease_ok(&srv, "s-1", &rid, "heartbeat", json!({"lease_seconds": 10})).await;
    }
    assert_eq!(run_status(&srv, &rid).await, "claimed");
    assert_eq!(advance_recovering(&srv, 10.0).await, 1);
    assert_eq!(run_status(&srv, &rid).await, "queued");
}

#[tokio::test]
async fn a_running_run_whose_lease_expires_is_requeued_too() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "running", json!({})).await;
    claim(&srv, "s-1", json!({"lease_seconds": 5})).await;
    srv.start_run(&rid).await;
    assert_eq!(advance_recovering(&srv, 6.0).await, 1);
    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "queued", "{run}");
    assert_absent(&run, "started_at");
    let e = the_event(&srv, &tid, "task.run_lease_expired").await;
    assert_eq!(e["payload"]["previous_status"], "running", "{e}");
}

#[tokio::test]
async fn a_poison_run_is_failed_on_its_third_expiry() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "poison", json!({})).await;
    let mut last_hash = String::new();
    for round in 1..=3 {
        let c = claim(&srv, &format!("s-{round}"), json!({"lease_seconds": 10})).await;
        assert_eq!(run_of(&c), rid, "round {round}");
        last_hash = hash_of(&c);
        assert_eq!(advance_recovering(&srv, 11.0).await, 1, "round {round}");
        let expired = run_events(&srv, &tid, "task.run_lease_expired").await;
        if round < 3 {
            assert_eq!(run_status(&srv, &rid).await, "queued", "round {round}");
            assert_eq!(expired.len(), round);
            assert_eq!(expired[round - 1]["payload"]["lease_expirations"], round);
        } else {
            assert_eq!(
                expired.len(),
                2,
                "the third expiry fails instead of requeueing"
            );
        }
    }
    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"], "lease expired 3 times", "{run}");
    assert_absent(&run, "lease_until");
    let e = the_event(&srv, &tid, "task.run_failed").await;
    assert_eq!(e["payload"]["reason"], "lease_expired", "{e}");
    assert_eq!(e["payload"]["status"], "failed", "{e}");
    assert_eq!(e["payload"]["claim_token_hash"], last_hash, "{e}");
    // It is not claimable any more, and its last holder is fenced.
    claim_nothing(&srv, "s-9", json!({})).await;
    assert_err(
        &lease_op(&srv, "s-3", &rid, "complete", json!({})).await,
        409,
        "lease_expired",
    );
    assert_eq!(srv.runs(&tid, "").await.len(), 1, "no automatic retry");
}

#[tokio::test]
async fn releases_do_not_count_as_expiries() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "released often", json!({})).await;
    for i in 0..4 {
        claim(&srv, &format!("s-r{i}"), json!({"lease_seconds": 10})).await;
        lease_ok(&srv, &format!("s-r{i}"), &rid, "release", json!({})).await;
    }
    for i in 0..2 {
        claim(&srv, &format!("s-e{i}"), json!({"lease_seconds": 10})).await;
        assert_eq!(advance_recovering(&srv, 11.0).await, 1);
    }
    assert_eq!(run_status(&srv, &rid).await, "queued");
}

#[tokio::test]
async fn max_lease_expirations_is_a_server_setting() {
    let srv = clock_server_with(&[("TASKLANE_MAX_LEASE_EXPIRATIONS", "1")]);
    let (_, rid) = queued(&srv, "fragile", json!({})).await;
    claim(&srv, "s-1", json!({"lease_seconds": 10})).await;
    assert_eq!(advance_recovering(&srv, 11.0).await, 1);
    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"], "lease expired 1 times", "{run}");

    let srv = clock_server_with(&[("TASKLANE_MAX_LEASE_EXPIRATIONS", "5")]);
    let (_, rid) = queued(&srv, "sturdy", json!({})).await;
    for round in 1..=5 {
        claim(&srv, &format!("s-{round}"), json!({"lease_seconds": 10})).await;
        assert_eq!(advance_recovering(&srv, 11.0).await, 1);
        let expected = if round < 5 { "queued" } else { "failed" };
        assert_eq!(run_status(&srv, &rid).await, expected, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_leases_expiring_at_once_are_all_recovered() {
    let srv = clock_server();
    const N: usize = 120;
    let mut runs = Vec::new();
    for i in 0..N {
        runs.push(queued(&srv, &format!("bulk {i}"), json!({})).await.1);
    }
    let claims = futures::future::join_all((0..N).map(|i| {
        let api = srv.api.clone();
        async move { claim(&api, &format!("s-{i}"), json!({"lease_seconds": 10})).await }
    }))
    .await;
    let claimed: std::collections::HashSet<String> = claims.iter().map(run_of).collect();
    assert_eq!(claimed.len(), N);
    assert_eq!(advance_recovering(&srv, 11.0).await, N as u64);
    for rid in &runs {
        assert_eq!(run_status(&srv, rid).await, "queued");
    }
}

// ---------------------------------------------------------------------------------------------
// Real clock: the background sweep and start-up recovery.
// ---------------------------------------------------------------------------------------------

fn wall_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Sleeps until the wall clock is past `lease_until` (plus a small margin): waiting for time to
/// pass, not for the server.
async fn until_past(lease_until: &str) {
    let remaining = micros(lease_until) + 50_000 - wall_micros();
    if remaining > 0 {
        tokio::time::sleep(Duration::from_micros(remaining as u64)).await;
    }
}

#[tokio::test]
async fn the_sweeper_recovers_an_expired_lease_on_the_real_clock() {
    let srv = Server::start();
    // The test clock is not there on a real-clock server.
    let r = srv
        .post("/api/_test/clock/advance", json!({"seconds": 3600}))
        .await;
    assert_status(&r, 404);
    let (tid, rid) = queued(&srv, "real clock", json!({})).await;
    let c = claim(&srv, "s-1", json!({"lease_seconds": 1})).await;
    until_past(&str_of(&c["lease"], "lease_until")).await;
    // Bounded wait for the server's sweep (the spec allows it up to 1 s after lease_until).
    let deadline = Instant::now() + Duration::from_secs(5);
    while run_status(&srv, &rid).await != "queued" {
        assert!(
            Instant::now() < deadline,
            "lease not recovered within 5 s of lease_until: {}",
            srv.get_run(&rid).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = the_event(&srv, &tid, "task.run_lease_expired").await;
    assert_eq!(e["payload"]["session_id"], "s-1", "{e}");
    assert_eq!(e["payload"]["reason"], "scheduler_sweep", "{e}");
}

#[tokio::test]
async fn leases_that_expired_while_the_server_was_down_are_recovered_before_it_serves() {
    let mut srv = Server::start();
    let (short_task, short) = queued(&srv, "short lease", json!({})).await;
    let (_, long) = queued(&srv, "long lease", json!({})).await;
    let c = claim(&srv, "s-short", json!({"lease_seconds": 1})).await;
    assert_eq!(run_of(&c), short);
    let long_claim = claim(&srv, "s-long", json!({"lease_seconds": 3600})).await;
    assert_eq!(run_of(&long_claim), long);

    let status = srv.terminate();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    // The short lease ends while nobody serves.
    until_past(&str_of(&c["lease"], "lease_until")).await;
    srv.restart();

    // The very first request already sees the recovery: it happens before serving.
    let run = srv.get_run(&short).await;
    assert_eq!(run["status"], "queued", "recovered at start-up: {run}");
    let e = the_event(&srv, &short_task, "task.run_lease_expired").await;
    assert_eq!(e["payload"]["reason"], "orphaned_on_boot", "{e}");
    assert_eq!(e["payload"]["session_id"], "s-short", "{e}");

    // A live lease survives the restart and its holder can still act on it.
    let run = srv.get_run(&long).await;
    assert_eq!(run["status"], "claimed", "{run}");
    assert_eq!(
        run["claim_token_hash"],
        long_claim["lease"]["claim_token_hash"]
    );
    lease_ok(&srv, "s-long", &long, "heartbeat", json!({})).await;
    lease_ok(&srv, "s-long", &long, "complete", json!({})).await;
    // The requeued run is claimable again.
    assert_eq!(run_of(&claim(&srv, "s-other", json!({})).await), short);
}
