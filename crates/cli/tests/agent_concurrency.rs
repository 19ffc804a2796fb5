//! The agent protocol under concurrent requests: many agents draining a queue complete each run
//! exactly once; racing claims, racing lease operations and a heartbeat racing expiry each have
//! exactly one outcome.
mod common;
mod support_agent;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::Barrier;

use common::*;
use support_agent::*;

fn count(resps: &[(StatusCode, Value)], status: u16) -> usize {
    resps.iter().filter(|(s, _)| s.as_u16() == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_agents_racing_over_forty_runs_complete_each_exactly_once() {
    const AGENTS: usize = 12;
    const RUNS: usize = 40;
    let srv = Server::start();
    let mut tasks = Vec::new();
    let mut run_to_task = HashMap::new();
    for i in 0..RUNS {
        let tid = srv.task(&format!("work item {i}")).await;
        let (s, v) = srv
            .post(&format!("/api/tasks/{tid}/start"), json!({}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "start {tid}: {v}");
        run_to_task.insert(id(&v["run"]), tid.clone());
        tasks.push(tid);
    }

    let barrier = Arc::new(Barrier::new(AGENTS));
    let workers = (0..AGENTS).map(|a| {
        let api = srv.api.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            let sid = format!("agent-{a}");
            barrier.wait().await;
            let mut done = Vec::new();
            loop {
                let (s, v) = claim_next(&api, &sid, json!({"lease_seconds": 300})).await;
                if s == StatusCode::NO_CONTENT {
                    break;
                }
                let c = expect_claim(&sid, (s, v));
                let rid = run_of(&c);
                let lease = lease_ok(
                    &api,
                    &sid,
                    &rid,
                    "complete",
                    json!({"result": {"agent": sid, "run": rid}}),
                )
                .await;
                assert_eq!(lease["status"], "completed");
                done.push(rid);
            }
            (sid, done)
        })
    });
    let results: Vec<(String, Vec<String>)> = join_all(workers)
        .await
        .into_iter()
        .map(|r| r.expect("agent task"))
        .collect();

    let total: usize = results.iter().map(|(_, d)| d.len()).sum();
    assert_eq!(total, RUNS, "completions add up: {results:?}");
    let unique: HashSet<&String> = results.iter().flat_map(|(_, d)| d).collect();
    assert_eq!(unique.len(), RUNS, "no run completed twice: {results:?}");
    let completed_by: HashMap<&String, &String> = results
        .iter()
        .flat_map(|(sid, d)| d.iter().map(move |r| (r, sid)))
        .collect();

    for tid in &tasks {
        let runs = srv.runs(tid, "").await;
        assert_eq!(runs.len(), 1, "task {tid} has exactly one run: {runs:?}");
        let run = srv.get_run(&id(&runs[0])).await;
        assert_eq!(run["status"], "completed", "{run}");
        let rid = id(&run);
        assert_eq!(run_to_task[&rid], *tid);
        let holder = completed_by[&rid];
        assert_eq!(run["session_id"], **holder, "{run}");
        assert_eq!(run["result"]["agent"], **holder, "{run}");
        assert_eq!(srv.status_of(tid).await, "completed");
        let events = srv.events(tid).await;
        assert_eq!(count_events(&events, "task.run_claimed"), 1, "{tid}");
        assert_eq!(count_events(&events, "task.run_completed"), 1, "{tid}");
    }
    // Nothing left for anyone.
    claim_nothing(&srv, "late-agent", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_release_complete_and_fail_on_one_lease_have_exactly_one_winner() {
    let srv = clock_server();
    let mut winners = HashMap::new();
    for round in 0..12 {
        let sid = format!("s-{round}");
        let (tid, rid) = queued(&srv, &format!("round {round}"), json!({})).await;
        assert_eq!(run_of(&claim(&srv, &sid, json!({})).await), rid);
        let barrier = Arc::new(Barrier::new(3));
        let ops = [
            ("release", json!({"reason": "race"})),
            ("complete", json!({"result": {"round": round}})),
            ("fail", json!({"error": "race"})),
        ];
        let futs = ops.into_iter().map(|(op, body)| {
            let api = srv.api.clone();
            let sid = sid.clone();
            let rid = rid.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                (op, lease_op(&api, &sid, &rid, op, body).await)
            })
        });
        let resps: Vec<(&str, (StatusCode, Value))> = join_all(futs)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let ok: Vec<&str> = resps
            .iter()
            .filter(|(_, (s, _))| *s == StatusCode::OK)
            .map(|(op, _)| *op)
            .collect();
        assert_eq!(ok.len(), 1, "round {round}: exactly one winner: {resps:?}");
        for (op, (s, v)) in &resps {
            if *s != StatusCode::OK {
                assert_eq!(s.as_u16(), 409, "round {round}: loser {op}: {v}");
            }
        }
        let winner = ok[0];
        *winners.entry(winner).or_insert(0) += 1;
        let expected = match winner {
            "release" => "queued",
            "complete" => "completed",
            _ => "failed",
        };
        assert_eq!(run_status(&srv, &rid).await, expected, "round {round}");
        let events = srv.events(&tid).await;
        let finishing = count_events(&events, "task.run_released")
            + count_events(&events, "task.run_completed")
            + count_events(&events, "task.run_failed");
        assert_eq!(finishing, 1, "round {round}: one outcome recorded");
        // Whatever won, the lease is over.
        let r = lease_op(&srv, &sid, &rid, "heartbeat", json!({})).await;
        assert_eq!(
            r.0.as_u16(),
            409,
            "round {round}: heartbeat after the race: {r:?}"
        );
        if winner == "release" {
            // Leave the queue empty for the next round.
            let c = claim(&srv, "s-cleanup", json!({})).await;
            lease_ok(&srv, "s-cleanup", &run_of(&c), "complete", json!({})).await;
        }
    }
    eprintln!("winners: {winners:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_racing_for_one_run_yield_one_claim() {
    let srv = clock_server();
    for round in 0..5 {
        let (tid, rid) = queued(&srv, &format!("single {round}"), json!({})).await;
        let barrier = Arc::new(Barrier::new(8));
        let futs = (0..8).map(|i| {
            let api = srv.api.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                claim_next(&api, &format!("r{round}-s{i}"), json!({})).await
            })
        });
        let resps: Vec<(StatusCode, Value)> = join_all(futs)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(count(&resps, 200), 1, "round {round}: {resps:?}");
        assert_eq!(count(&resps, 204), 7, "round {round}: {resps:?}");
        let winner = resps.iter().find(|(s, _)| s.as_u16() == 200).unwrap();
        assert_eq!(id(&winner.1["claim"]["run"]), rid);
        let sid = str_of(&winner.1["claim"]["lease"], "session_id");
        assert_eq!(srv.get_run(&rid).await["session_id"], sid.as_str());
        assert_eq!(count_events(&srv.events(&tid).await, "task.run_claimed"), 1);
        lease_ok(&srv, &sid, &rid, "complete", json!({})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_claiming_concurrently_gets_one_lease() {
    let srv = clock_server();
    let mut runs = Vec::new();
    for i in 0..6 {
        runs.push(queued(&srv, &format!("w{i}"), json!({})).await.1);
    }
    let barrier = Arc::new(Barrier::new(6));
    let futs = (0..6).map(|_| {
        let api = srv.api.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            claim_next(&api, "greedy", json!({})).await
        })
    });
    let resps: Vec<(StatusCode, Value)> = join_all(futs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(count(&resps, 200), 1, "{resps:?}");
    for r in resps.iter().filter(|(s, _)| s.as_u16() != 200) {
        assert_err(r, 409, "lease_held");
    }
    let mut claimed = 0;
    for rid in &runs {
        if run_status(&srv, rid).await == "claimed" {
            claimed += 1;
        }
    }
    assert_eq!(claimed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_with_one_idempotency_key_get_the_same_claim() {
    let srv = clock_server();
    for i in 0..4 {
        queued(&srv, &format!("w{i}"), json!({})).await;
    }
    let barrier = Arc::new(Barrier::new(6));
    let futs = (0..6).map(|_| {
        let api = srv.api.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            claim_next(&api, "retrier", json!({"idempotency_key": "attempt-1"})).await
        })
    });
    let resps: Vec<(StatusCode, Value)> = join_all(futs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(count(&resps, 200), 6, "{resps:?}");
    let runs: HashSet<String> = resps.iter().map(|(_, v)| id(&v["claim"]["run"])).collect();
    let hashes: HashSet<String> = resps
        .iter()
        .map(|(_, v)| str_of(&v["claim"]["lease"], "claim_token_hash"))
        .collect();
    assert_eq!(runs.len(), 1, "{resps:?}");
    assert_eq!(hashes.len(), 1, "{resps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_racing_expiry_either_extends_or_is_fenced() {
    let srv = clock_server();
    let mut outcomes = HashMap::new();
    for round in 0..10 {
        let sid = format!("s-{round}");
        let (_, rid) = queued(&srv, &format!("race {round}"), json!({})).await;
        claim(&srv, &sid, json!({"lease_seconds": 10})).await;
        assert_eq!(advance_recovering(&srv, 9.5).await, 0);
        let barrier = Arc::new(Barrier::new(2));
        let (hb, adv) = {
            let (a1, a2) = (srv.api.clone(), srv.api.clone());
            let (b1, b2) = (barrier.clone(), barrier.clone());
            let (sid2, rid2) = (sid.clone(), rid.clone());
            let hb = tokio::spawn(async move {
                b1.wait().await;
                lease_op(&a1, &sid2, &rid2, "heartbeat", json!({"lease_seconds": 10})).await
            });
            let adv = tokio::spawn(async move {
                b2.wait().await;
                advance(&a2, 1.0).await
            });
            (hb.await.unwrap(), adv.await.unwrap())
        };
        let recovered = adv["recovered_leases"].as_u64().unwrap();
        let status = run_status(&srv, &rid).await;
        if hb.0 == StatusCode::OK {
            // The heartbeat came first: the lease was extended and nothing expired.
            assert_eq!(recovered, 0, "round {round}: {hb:?}");
            assert_eq!(status, "claimed", "round {round}");
            *outcomes.entry("extended").or_insert(0) += 1;
        } else {
            // Expiry came first (or the heartbeat arrived after the deadline): fenced.
            assert_eq!(hb.0.as_u16(), 409, "round {round}: {hb:?}");
            assert_eq!(recovered, 1, "round {round}");
            assert_eq!(status, "queued", "round {round}");
            *outcomes.entry("fenced").or_insert(0) += 1;
        }
        // Clean up: whoever holds the run completes it.
        let run = srv.get_run(&rid).await;
        if run["status"] == "claimed" {
            lease_ok(&srv, &sid, &rid, "complete", json!({})).await;
        } else {
            let c = claim(&srv, "s-cleanup", json!({})).await;
            lease_ok(&srv, "s-cleanup", &run_of(&c), "complete", json!({})).await;
        }
    }
    eprintln!("outcomes: {outcomes:?}");
}
