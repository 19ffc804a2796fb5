//! Concurrency: the one-open-run rule, compare-and-set claims, session binding and concurrent creates
//! hold under simultaneous requests.
mod common;
use common::*;

use futures::future::join_all;

/// Sends `n` copies of the same request at once; returns the responses.
async fn burst(
    api: &Api,
    n: usize,
    method: Method,
    path: String,
    body: Option<Value>,
) -> Vec<(StatusCode, Value)> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let futs = (0..n).map(|_| {
        let api = api.clone();
        let path = path.clone();
        let body = body.clone();
        let method = method.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            api.call(method, &path, body, &[]).await
        })
    });
    join_all(futs)
        .await
        .into_iter()
        .map(|r| r.expect("request task"))
        .collect()
}

fn count(resps: &[(StatusCode, Value)], status: u16) -> usize {
    resps.iter().filter(|(s, _)| s.as_u16() == status).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_enqueues_create_exactly_one_run() {
    let srv = Server::start();
    for round in 0..5 {
        let tid = srv.task(&format!("round {round}")).await;
        let resps = burst(
            &srv.api,
            8,
            Method::POST,
            format!("/api/tasks/{tid}/runs"),
            Some(json!({})),
        )
        .await;
        assert_eq!(count(&resps, 201), 1, "round {round}: {resps:?}");
        for (s, v) in resps.iter().filter(|(s, _)| s.as_u16() != 201) {
            assert_eq!(s.as_u16(), 409, "{v}");
            assert_eq!(v["code"], "open_run_exists", "{v}");
        }
        assert_eq!(srv.runs(&tid, "").await.len(), 1);
        assert_eq!(
            count_events(&srv.events(&tid).await, "task.run_enqueued"),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_enqueues_with_one_key_all_get_the_same_run() {
    let srv = Server::start();
    let tid = srv.task("keyed").await;
    let resps = burst(
        &srv.api,
        8,
        Method::POST,
        format!("/api/tasks/{tid}/runs"),
        Some(json!({"idempotency_key": "same-key"})),
    )
    .await;
    assert_eq!(count(&resps, 201), 8, "{resps:?}");
    let ids: std::collections::HashSet<String> = resps.iter().map(|(_, v)| id(&v["run"])).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(srv.runs(&tid, "").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_claims_of_one_run_have_one_winner() {
    let srv = Server::start();
    for round in 0..5 {
        let tid = srv.task(&format!("round {round}")).await;
        let rid = id(&srv.enqueue(&tid).await);
        let resps = burst(
            &srv.api,
            8,
            Method::POST,
            format!("/api/task-runs/{rid}/claim"),
            Some(json!({})),
        )
        .await;
        assert_eq!(count(&resps, 200), 1, "round {round}: {resps:?}");
        for (s, v) in resps.iter().filter(|(s, _)| s.as_u16() != 200) {
            assert_eq!(s.as_u16(), 409, "{v}");
            assert_eq!(v["code"], "invalid_transition", "{v}");
        }
        let ev = srv.events(&tid).await;
        assert_eq!(count_events(&ev, "task.run_claimed"), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn simultaneous_starts_of_one_claimed_run_have_one_winner() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    srv.claim(&rid).await;
    let resps = burst(
        &srv.api,
        6,
        Method::POST,
        format!("/api/task-runs/{rid}/start"),
        Some(json!({})),
    )
    .await;
    assert_eq!(count(&resps, 200), 1, "{resps:?}");
    assert_eq!(count(&resps, 409), 5, "{resps:?}");
    let ev = srv.events(&tid).await;
    assert_eq!(count_events(&ev, "task.run_started"), 1);
    assert_eq!(count_events(&ev, "task.run_starting"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_session_cannot_be_attached_to_two_runs_at_once() {
    let srv = Server::start();
    let mut runs = Vec::new();
    for i in 0..6 {
        let tid = srv.task(&format!("t{i}")).await;
        let rid = id(&srv.enqueue(&tid).await);
        srv.claim(&rid).await;
        runs.push(rid);
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(runs.len()));
    let futs = runs.iter().map(|rid| {
        let api = srv.api.clone();
        let rid = rid.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            api.post(
                &format!("/api/task-runs/{rid}/attach-session"),
                json!({"session_id": "shared-sess"}),
            )
            .await
        })
    });
    let resps: Vec<_> = join_all(futs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(count(&resps, 200), 1, "{resps:?}");
    for (s, v) in resps.iter().filter(|(s, _)| s.as_u16() != 200) {
        assert_eq!(s.as_u16(), 409, "{v}");
        assert_eq!(v["code"], "session_in_use", "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_creates_are_all_visible() {
    let srv = Server::start();
    let n = 64;
    let futs = (0..n).map(|i| {
        let api = srv.api.clone();
        tokio::spawn(async move {
            let (s, v) = api
                .post(
                    "/api/tasks",
                    json!({"scope": "global", "title": format!("concurrent {i}")}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
            id(&v["task"])
        })
    });
    let ids: Vec<String> = join_all(futs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), n, "generated ids are unique");
    let listed: std::collections::HashSet<String> = srv.list_ids("").await.into_iter().collect();
    for tid in &ids {
        assert!(listed.contains(tid), "{tid} missing from list");
    }
    assert_eq!(listed.len(), n);
    // Every create recorded its event with a unique sequence.
    let mut seqs = Vec::new();
    for tid in &ids {
        assert_eq!(srv.events(tid).await.len(), 1);
        seqs.push(srv.latest_seq(tid).await);
    }
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), n);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_mixed_workload_keeps_every_task_consistent() {
    // Many tasks driven through their lifecycle in parallel; at the end every task's status is the
    // one derived from its runs, and the list filters agree.
    let srv = Server::start();
    let n = 16;
    let futs = (0..n).map(|i| {
        let api = srv.api.clone();
        tokio::spawn(async move {
            let tid = api.task(&format!("mixed {i}")).await;
            let rid = id(&api.enqueue(&tid).await);
            api.claim(&rid).await;
            match i % 4 {
                0 => {
                    api.start_run(&rid).await;
                    api.complete_run(&rid, None).await;
                    (tid, "completed")
                }
                1 => {
                    api.start_run(&rid).await;
                    api.fail_run(&rid, "x").await;
                    (tid, "ready")
                }
                2 => {
                    api.cancel_run(&rid).await;
                    (tid, "canceled")
                }
                _ => {
                    api.start_run(&rid).await;
                    (tid, "in_progress")
                }
            }
        })
    });
    let results: Vec<(String, &str)> = join_all(futs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (tid, want) in &results {
        assert_eq!(srv.status_of(tid).await, *want, "{tid}");
    }
    for want in ["completed", "ready", "canceled", "in_progress"] {
        let mut expect: Vec<String> = results
            .iter()
            .filter(|(_, w)| *w == want)
            .map(|(t, _)| t.clone())
            .collect();
        expect.sort();
        let mut got = srv.list_ids(&format!("status={want}")).await;
        got.sort();
        assert_eq!(got, expect, "status={want}");
    }
}

/// Runs the given requests at the same instant; returns the responses in order.
async fn race(api: &Api, reqs: Vec<(Method, String, Option<Value>)>) -> Vec<(StatusCode, Value)> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(reqs.len()));
    let futs = reqs.into_iter().map(|(method, path, body)| {
        let api = api.clone();
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            api.call(method, &path, body, &[]).await
        })
    });
    join_all(futs)
        .await
        .into_iter()
        .map(|r| r.expect("request task"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn opposite_edges_added_at_once_never_make_a_cycle() {
    let srv = Server::start();
    for round in 0..6 {
        let a = srv.task(&format!("a{round}")).await;
        let b = srv.task(&format!("b{round}")).await;
        let resps = race(
            &srv.api,
            vec![
                (
                    Method::POST,
                    format!("/api/tasks/{a}/dependencies"),
                    Some(json!({"depends_on_task_id": b.clone()})),
                ),
                (
                    Method::POST,
                    format!("/api/tasks/{b}/dependencies"),
                    Some(json!({"depends_on_task_id": a.clone()})),
                ),
            ],
        )
        .await;
        assert_eq!(count(&resps, 200), 1, "round {round}: {resps:?}");
        let loser = resps.iter().find(|(s, _)| s.as_u16() != 200).unwrap();
        assert_eq!(loser.0.as_u16(), 409, "{loser:?}");
        assert_eq!(loser.1["code"], "dependency_cycle");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graph_limits_hold_under_concurrent_writes() {
    let srv = Server::start();
    // 40 edges at once onto one task: exactly 32 land.
    let hub = srv.task("hub").await;
    let mut blockers = Vec::new();
    for i in 0..40 {
        blockers.push(srv.task(&format!("b{i}")).await);
    }
    let reqs = blockers
        .iter()
        .map(|b| {
            (
                Method::POST,
                format!("/api/tasks/{hub}/dependencies"),
                Some(json!({"depends_on_task_id": b})),
            )
        })
        .collect();
    let resps = race(&srv.api, reqs).await;
    assert_eq!(count(&resps, 200), 32, "{resps:?}");
    assert!(resps
        .iter()
        .filter(|(s, _)| s.as_u16() != 200)
        .all(|(s, v)| s.as_u16() == 409 && v["code"] == "graph_limit_exceeded"));
    assert_eq!(srv.detail(&hub).await["summary"]["dependency_count"], 32);

    // 70 children at once under one parent: exactly 64 land.
    let parent = srv.task("parent").await;
    let reqs = (0..70)
        .map(|i| {
            (
                Method::POST,
                format!("/api/tasks/{parent}/children"),
                Some(json!({"scope": "global", "title": format!("kid {i}")})),
            )
        })
        .collect();
    let resps = race(&srv.api, reqs).await;
    assert_eq!(count(&resps, 201), 64, "{resps:?}");
    assert!(resps
        .iter()
        .filter(|(s, _)| s.as_u16() != 201)
        .all(|(s, v)| s.as_u16() == 409 && v["code"] == "graph_limit_exceeded"));
    assert_eq!(srv.detail(&parent).await["summary"]["child_count"], 64);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_ids_created_at_once_have_one_winner() {
    let srv = Server::start();
    let reqs = (0..8)
        .map(|i| {
            (
                Method::POST,
                "/api/tasks".to_string(),
                Some(json!({"id": "same-id", "scope": "global", "title": format!("t{i}")})),
            )
        })
        .collect();
    let resps = race(&srv.api, reqs).await;
    assert_eq!(count(&resps, 201), 1, "{resps:?}");
    assert_eq!(count(&resps, 409), 7, "{resps:?}");
    assert_eq!(srv.events("same-id").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_and_reject_at_once_have_one_winner() {
    let srv = Server::start();
    for round in 0..5 {
        let t = id(&srv
            .task_with(&format!("g{round}"), json!({"approval_policy": "manual"}))
            .await);
        let resps = race(
            &srv.api,
            vec![
                (Method::POST, format!("/api/tasks/{t}/approve"), None),
                (Method::POST, format!("/api/tasks/{t}/reject"), None),
            ],
        )
        .await;
        let ok = resps.iter().filter(|(s, _)| s.is_success()).count();
        assert_eq!(ok, 1, "round {round}: {resps:?}");
        let state = str_of(&srv.get_task(&t).await, "approval_state");
        let runs = srv.runs(&t, "").await.len();
        if resps[0].0.is_success() {
            assert_eq!((state.as_str(), runs), ("approved", 1));
        } else {
            assert_eq!((state.as_str(), runs), ("rejected", 0));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_racing_with_child_create_or_enqueue_never_both_win() {
    let srv = Server::start();
    for round in 0..6 {
        let t = srv.task(&format!("t{round}")).await;
        let second = if round % 2 == 0 {
            (
                Method::POST,
                format!("/api/tasks/{t}/children"),
                Some(json!({"scope": "global", "title": "kid"})),
            )
        } else {
            (
                Method::POST,
                format!("/api/tasks/{t}/runs"),
                Some(json!({})),
            )
        };
        let resps = race(
            &srv.api,
            vec![(Method::DELETE, format!("/api/tasks/{t}"), None), second],
        )
        .await;
        let (del, other) = (&resps[0], &resps[1]);
        if del.0.as_u16() == 204 {
            assert_eq!(other.0.as_u16(), 404, "deleted, yet {other:?}");
            assert_err(
                &srv.get(&format!("/api/tasks/{t}")).await,
                404,
                "task_not_found",
            );
        } else {
            assert_eq!(del.0.as_u16(), 400, "{del:?}");
            assert!(other.0.is_success(), "{other:?}");
            assert_eq!(srv.get_task(&t).await["id"], t.as_str());
        }
    }
    // No orphan children survive.
    for kid in srv.list("").await {
        if let Some(p) = kid["parent_task_id"].as_str() {
            assert_eq!(
                srv.get(&format!("/api/tasks/{p}")).await.0,
                200,
                "orphan {kid}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tree_cancel_racing_with_enqueues_leaves_no_open_run() {
    let srv = Server::start();
    for round in 0..4 {
        let root = srv.task(&format!("root {round}")).await;
        let kids = {
            let mut v = Vec::new();
            for i in 0..4 {
                v.push(srv.child(&root, &format!("kid {i}")).await);
            }
            v
        };
        let mut reqs: Vec<(Method, String, Option<Value>)> = kids
            .iter()
            .map(|k| {
                (
                    Method::POST,
                    format!("/api/tasks/{k}/runs"),
                    Some(json!({})),
                )
            })
            .collect();
        reqs.insert(2, (Method::POST, format!("/api/tasks/{root}/cancel"), None));
        let resps = race(&srv.api, reqs).await;
        assert_eq!(resps[2].0.as_u16(), 200, "{:?}", resps[2]);
        for k in &kids {
            assert_eq!(srv.status_of(k).await, "canceled", "{k}");
            for r in srv.runs(k, "").await {
                assert_eq!(
                    r["status"], "canceled",
                    "open run left under a canceled task: {r}"
                );
            }
        }
    }
}
