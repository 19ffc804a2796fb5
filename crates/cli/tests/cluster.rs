//! Several servers on one PostgreSQL database are one service: claims exclusive whichever node an
//! agent talks to, a parked claim on one node woken by an enqueue on another, SSE on one node
//! delivering every node's events in sequence order, each expired lease recovered once however
//! many sweepers run, and a dependent auto-enqueued once when its blockers complete on two nodes
//! at the same moment, a token revocation reaching every node, lost database connections
//! answered with 503 and healed without a restart, and one test clock for the whole service.
//!
//! These tests need `TASKLANE_TEST_DATABASE_URL` (as `.ci/run` sets it); on SQLite, which has one
//! server per file, they return at once.
mod common;
mod observe_support;
mod support_agent;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::*;
use observe_support::SseClient;
use support_agent::*;

/// Two or more servers on one fresh database, or None on SQLite.
fn cluster(nodes: usize) -> Option<Vec<Server>> {
    cluster_with(nodes, &[])
}

fn cluster_with(nodes: usize, env: &[(&str, &str)]) -> Option<Vec<Server>> {
    if !on_postgres() {
        eprintln!("skipped: multi-node tests need TASKLANE_TEST_DATABASE_URL (PostgreSQL)");
        return None;
    }
    let first = Server::start_with_env(env);
    let mut all = vec![];
    for _ in 1..nodes {
        all.push(first.another_node());
    }
    all.insert(0, first);
    Some(all)
}

/// Polls `check` until it holds; fails after `within`. For outcomes that take real time (lease
/// deadlines on the system clock), never to order the test's own steps.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn claims_are_exclusive_across_nodes() {
    let Some(nodes) = cluster(3) else { return };
    let mut runs = HashSet::new();
    for i in 0..30 {
        let (_, rid) = queued(&nodes[i % 3], &format!("job {i}"), json!({})).await;
        runs.insert(rid);
    }
    // Twelve agents, four per node, claim and complete until nothing is left.
    let mut agents = vec![];
    for a in 0..12 {
        let api = nodes[a % 3].api.clone();
        agents.push(tokio::spawn(async move {
            let sid = format!("agent-{a}");
            let mut mine = vec![];
            loop {
                let (s, v) = claim_next(&api, &sid, json!({})).await;
                if s == StatusCode::NO_CONTENT {
                    return mine;
                }
                let c = expect_claim(&sid, (s, v));
                let rid = run_of(&c);
                lease_ok(&api, &sid, &rid, "complete", json!({})).await;
                mine.push(rid);
            }
        }));
    }
    let mut claimed = vec![];
    for agent in agents {
        claimed.extend(agent.await.unwrap());
    }
    let distinct: HashSet<String> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), distinct.len(), "a run was claimed twice");
    assert_eq!(distinct, runs, "every run claimed exactly once");
    for rid in &runs {
        assert_eq!(run_status(&nodes[0], rid).await, "completed");
    }
}

#[tokio::test]
async fn an_enqueue_on_one_node_wakes_a_claim_parked_on_another() {
    let Some(nodes) = cluster(2) else { return };
    let (a, b) = (&nodes[0], &nodes[1]);
    let probe = probe_session(b, "w-1").await;
    let before = last_seen(b, &probe).await;
    let waiter = spawn_waiter(b, "w-1", json!({"wait_seconds": 30}));
    // Parked once its first attempt touched the session.
    eventually(
        Duration::from_secs(10),
        "the waiting claim reached node B",
        || async { waiter.is_finished() || last_seen(b, &probe).await > before },
    )
    .await;
    assert!(!waiter.is_finished(), "nothing to claim yet");
    let started = Instant::now();
    let (_, rid) = queued(a, "work from A", json!({})).await;
    let c = expect_claim("w-1", answer(waiter, 45).await);
    assert_eq!(run_of(&c), rid);
    // Woken by node A's commit, not by the end of the 30 s wait.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woken only after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stream_on_one_node_delivers_every_nodes_events_in_order() {
    let Some(nodes) = cluster(2) else { return };
    let (a, b) = (&nodes[0], &nodes[1]);
    let root = a.task("root").await;
    let mut stream = SseClient::connect(b, &format!("/api/tasks/{root}/stream"), &[]).await;
    assert_eq!(stream.status, StatusCode::OK);
    // Children written through both nodes at once, so their transactions interleave.
    let writers: Vec<_> = [a.api.clone(), b.api.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, api)| {
            let root = root.clone();
            tokio::spawn(async move {
                let mut children = vec![];
                for i in 0..10 {
                    children.push(api.child(&root, &format!("node {n} child {i}")).await);
                }
                children
            })
        })
        .collect();
    let mut tasks = vec![root.clone()];
    for w in writers {
        tasks.extend(w.await.unwrap());
    }
    let mut expected = BTreeSet::new();
    for tid in &tasks {
        for item in a.timeline(tid, "").await {
            expected.insert(item["sequence"].as_i64().unwrap());
        }
    }
    let frames = stream.frames(expected.len(), Duration::from_secs(10)).await;
    let seen: Vec<i64> = frames.iter().map(|f| f.0).collect();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending: {seen:?}");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
}

#[tokio::test]
async fn an_expired_lease_is_recovered_once_by_several_sweepers() {
    let Some(nodes) = cluster(3) else { return };
    let mut runs = vec![];
    for i in 0..6 {
        let (tid, rid) = queued(&nodes[0], &format!("abandoned {i}"), json!({})).await;
        runs.push((tid, rid));
    }
    for i in 0..6 {
        claim(
            &nodes[i % 3],
            &format!("crashed-{i}"),
            json!({"lease_seconds": 1}),
        )
        .await;
    }
    for (tid, rid) in &runs {
        eventually(
            Duration::from_secs(20),
            "the lease was recovered",
            || async { run_status(&nodes[1], rid).await == "queued" },
        )
        .await;
        let expired = run_events(&nodes[2], tid, "task.run_lease_expired").await;
        assert_eq!(expired.len(), 1, "one recovery per expiry: {expired:?}");
        let (s, v) = nodes[0].get(&format!("/api/task-runs/{rid}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["run"]["run"]["lease_expirations"], 1, "{v}");
    }
}

#[tokio::test]
async fn blockers_completed_on_two_nodes_at_once_enqueue_their_dependent_once() {
    let Some(nodes) = cluster(2) else { return };
    let (a, b) = (&nodes[0], &nodes[1]);
    for round in 0..5 {
        let dependent = id(&a
            .task_with(
                &format!("dependent {round}"),
                // A capability no agent here offers: earlier rounds' dependents stay queued.
                json!({"auto_enqueue_on_ready": true, "required_capabilities": ["later"]}),
            )
            .await);
        let (b1, r1) = queued(a, &format!("blocker one {round}"), json!({})).await;
        let (b2, r2) = queued(b, &format!("blocker two {round}"), json!({})).await;
        a.add_dep(&dependent, &b1).await;
        b.add_dep(&dependent, &b2).await;
        let c1 = claim(a, &format!("one-{round}"), json!({})).await;
        let c2 = claim(b, &format!("two-{round}"), json!({})).await;
        let mut claimed = [run_of(&c1), run_of(&c2)];
        claimed.sort();
        let mut blockers = [r1.clone(), r2.clone()];
        blockers.sort();
        assert_eq!(claimed, blockers);
        let (s1, s2) = (format!("one-{round}"), format!("two-{round}"));
        let (run1, run2) = (run_of(&c1), run_of(&c2));
        tokio::join!(
            lease_ok(a, &s1, &run1, "complete", json!({})),
            lease_ok(b, &s2, &run2, "complete", json!({})),
        );
        let (s, v) = b.get(&format!("/api/tasks/{dependent}/runs")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let runs = v["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1, "enqueued exactly once: {v}");
        assert_eq!(runs[0]["status"], "queued", "{v}");
    }
}

#[tokio::test]
async fn lost_database_connections_fail_requests_with_503_and_heal_by_themselves() {
    let Some(nodes) = cluster(2) else { return };
    let (a, b) = (&nodes[0], &nodes[1]);
    // A stream on B across the outage, and a writer on A throughout it.
    let root = a.task("root").await;
    let mut stream = SseClient::connect(b, &format!("/api/tasks/{root}/stream"), &[]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (api, stop) = (a.api.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acknowledged, mut refused) = (vec![], 0);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5000 {
                i += 1;
                let body = json!({"scope": "global", "title": format!("write {i}")});
                let (s, v) = api.call(Method::POST, "/api/tasks", Some(body), &[]).await;
                match s {
                    StatusCode::CREATED => acknowledged.push(id(&v["task"])),
                    StatusCode::SERVICE_UNAVAILABLE => refused += 1,
                    other => panic!("neither acknowledged nor 503: {other} {v}"),
                }
            }
            (acknowledged, refused)
        })
    };
    for _ in 0..3 {
        a.drop_database_connections();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, refused) = writer.await.unwrap();
    eprintln!(
        "{} acknowledged, {refused} refused with 503",
        acknowledged.len()
    );
    // Both servers serve again without a restart, and every acknowledged write is there.
    eventually(Duration::from_secs(10), "node A writes again", || async {
        let body = json!({"scope": "global", "title": "after"});
        a.try_call(Method::POST, "/api/tasks", Some(body), &[])
            .await
            .is_ok_and(|(s, _)| s == StatusCode::CREATED)
    })
    .await;
    for tid in &acknowledged {
        let (s, v) = b.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(s, StatusCode::OK, "acknowledged task {tid} is gone: {v}");
    }
    // The stream on B carries on: children written through both nodes after the outage arrive
    // in order, after the root's own events, none missing.
    let mut tasks = vec![root.clone()];
    for i in 0..4 {
        tasks.push(nodes[i % 2].child(&root, &format!("child {i}")).await);
    }
    let mut expected = BTreeSet::new();
    for tid in &tasks {
        for item in b.timeline(tid, "").await {
            expected.insert(item["sequence"].as_i64().unwrap());
        }
    }
    let frames = stream.frames(expected.len(), Duration::from_secs(10)).await;
    let seen: Vec<i64> = frames.iter().map(|f| f.0).collect();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending: {seen:?}");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
    // A claim parked on B wakes for work enqueued on A after the outage.
    let waiter = spawn_waiter(b, "w-1", json!({"wait_seconds": 30}));
    let (_, rid) = queued(a, "work after the outage", json!({})).await;
    assert_eq!(run_of(&expect_claim("w-1", answer(waiter, 45).await)), rid);
}

#[tokio::test]
async fn a_token_created_or_revoked_through_one_database_reaches_every_node() {
    let Some(nodes) = cluster_with(2, &[("TASKLANE_AUTH", "token")]) else {
        return;
    };
    let token = create_token(nodes[0].database(), "operator", "ops");
    for node in &nodes {
        let (s, v) = node
            .call(Method::GET, "/api/tasks", None, &bearer(&token))
            .await;
        assert_eq!(
            s,
            StatusCode::OK,
            "a new token works on its first request: {v}"
        );
    }
    let out = token_cli(nodes[0].database(), &["revoke", "ops"]);
    assert!(out.status.success(), "{out:?}");
    for node in &nodes {
        eventually(
            Duration::from_secs(10),
            "the revocation reached the node",
            || async {
                let (s, _) = node
                    .call(Method::GET, "/api/tasks", None, &bearer(&token))
                    .await;
                s == StatusCode::UNAUTHORIZED
            },
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// The test clock: one clock for the whole service. Time moves only through
// `POST /api/_test/clock/advance`, so every expectation below is exact.
// ---------------------------------------------------------------------------------------------

/// Servers on the test clock on one fresh database, or None on SQLite.
fn clock_cluster(nodes: usize) -> Option<Vec<Server>> {
    cluster_with(nodes, &[("TASKLANE_TEST_CLOCK", "true")])
}

/// The `now` an advance answers, in microseconds.
async fn advanced(node: &Server, seconds: f64) -> i64 {
    micros(&str_of(&advance(node, seconds).await, "now"))
}

/// How long the oldest queued run has waited, as `GET /api/observe/queue` reads it: a read that
/// takes the server's `now`.
async fn oldest_queue_age_ms(node: &Server) -> i64 {
    let (s, v) = node.get("/api/observe/queue").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["queue"]["by_priority"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["count"].as_i64().unwrap() > 0)
        .map(|row| row["oldest_queue_age_ms"].as_i64().unwrap())
        .max()
        .unwrap_or_else(|| panic!("nothing queued: {v}"))
}

#[tokio::test]
async fn a_lease_claimed_through_one_node_expires_by_time_moved_on_another() {
    let Some(nodes) = clock_cluster(2) else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let start = advanced(b, 100.0).await;
    let (tid, rid) = queued(a, "leased through A", json!({})).await;
    let c = claim(a, "s-1", json!({"lease_seconds": 30})).await;
    // A stamped the lease at the time B moved the service to.
    assert_eq!(
        micros(&str_of(&c["lease"], "lease_until")),
        start + 30_000_000,
        "{c}"
    );
    // Not yet expired: B recovers nothing and A still shows the claim.
    assert_eq!(advance_recovering(b, 29.0).await, 0);
    assert_eq!(run_status(a, &rid).await, "claimed");
    // One second past lease_until: B's advance recovers it, once, and A sees it queued.
    assert_eq!(advance_recovering(b, 2.0).await, 1);
    assert_eq!(run_status(a, &rid).await, "queued");
    let expired = run_events(a, &tid, "task.run_lease_expired").await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(
        micros(&str_of(&expired[0], "timestamp")),
        start + 31_000_000,
        "{expired:?}"
    );
    assert_err(
        &lease_op(a, "s-1", &rid, "heartbeat", json!({})).await,
        409,
        "no_active_lease",
    );
}

#[tokio::test]
async fn advances_on_two_nodes_add_up_on_both() {
    let Some(nodes) = clock_cluster(2) else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let (_, rid) = queued(a, "waiting", json!({})).await;
    let queued_at = micros(&str_of(&a.get_run(&rid).await, "queued_at"));

    assert_eq!(advanced(a, 10.0).await, queued_at + 10_000_000);
    // Written through B right after A's advance: stamped with A's time.
    let through_b = b.task_with("written through B", json!({})).await;
    assert_eq!(
        micros(&str_of(&through_b, "created_at")),
        queued_at + 10_000_000
    );
    assert_eq!(oldest_queue_age_ms(b).await, 10_000);

    assert_eq!(advanced(b, 10.0).await, queued_at + 20_000_000);
    let through_a = a.task_with("written through A", json!({})).await;
    assert_eq!(
        micros(&str_of(&through_a, "created_at")),
        queued_at + 20_000_000
    );
    for node in [a, b] {
        assert_eq!(oldest_queue_age_ms(node).await, 20_000);
    }
}

#[tokio::test]
async fn a_node_started_after_an_advance_starts_at_the_services_time() {
    let Some(nodes) = clock_cluster(1) else {
        return;
    };
    let a = &nodes[0];
    queued(a, "waiting", json!({})).await;
    // A millisecond ahead of the service's start: behind the wall clock by the time the next
    // node is up, so a node that started at the wall clock would be seen ahead.
    let service = advanced(a, 0.001).await;
    let b = a.another_node();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        wall > service,
        "the wall clock is ahead of the service's time"
    );
    assert_eq!(oldest_queue_age_ms(&b).await, 1);
    let through_b = b.task_with("written through the new node", json!({})).await;
    assert_eq!(micros(&str_of(&through_b, "created_at")), service);
    assert_eq!(advanced(&b, 0.0).await, service);
}

#[tokio::test]
async fn a_claim_parked_before_an_advance_elsewhere_is_stamped_at_the_advanced_time() {
    let Some(nodes) = clock_cluster(2) else {
        return;
    };
    let (a, b) = (&nodes[0], &nodes[1]);
    let probe = probe_session(a, "w-1").await;
    let waiter = parked_waiter(a, "w-1", &probe, json!({"wait_seconds": 30})).await;
    assert!(!waiter.is_finished(), "nothing to claim yet");
    let moved = advanced(b, 50.0).await;
    let (_, rid) = queued(b, "work from B", json!({})).await;
    let c = expect_claim("w-1", answer(waiter, 45).await);
    assert_eq!(run_of(&c), rid);
    // The request reached A before the advance; its claim committed after it, at B's time.
    assert_eq!(micros(&str_of(&c["run"], "claimed_at")), moved, "{c}");
}

#[tokio::test]
async fn advances_on_two_nodes_at_once_add_up_and_recover_each_lease_once() {
    let Some(nodes) = clock_cluster(2) else {
        return;
    };
    let mut runs = vec![];
    for i in 0..6 {
        runs.push(queued(&nodes[i % 2], &format!("abandoned {i}"), json!({})).await);
    }
    for i in 0..6 {
        claim(
            &nodes[i % 2],
            &format!("crashed-{i}"),
            json!({"lease_seconds": 10}),
        )
        .await;
    }
    let (x, y) = tokio::join!(advance(&nodes[0], 11.0), advance(&nodes[1], 11.0));
    let recovered =
        x["recovered_leases"].as_u64().unwrap() + y["recovered_leases"].as_u64().unwrap();
    assert_eq!(recovered, 6, "{x} {y}");
    // The two advances added up, in one order or the other, and both servers are at the sum.
    let (x, y) = (micros(&str_of(&x, "now")), micros(&str_of(&y, "now")));
    assert_eq!((x - y).abs(), 11_000_000);
    for node in &nodes {
        assert_eq!(advanced(node, 0.0).await, x.max(y));
    }
    for (tid, rid) in &runs {
        assert_eq!(run_status(&nodes[1], rid).await, "queued");
        let expired = run_events(&nodes[0], tid, "task.run_lease_expired").await;
        assert_eq!(expired.len(), 1, "one recovery per expiry: {expired:?}");
    }
}
