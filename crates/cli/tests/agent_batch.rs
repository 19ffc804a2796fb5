//! The batch endpoints of the agent API: `claim-batch` claims one run for each listed session in
//! one request, `complete-batch` completes, fails or releases many leases in one request. Each
//! run is still leased to one session, fenced like the single-run endpoints, recorded as events,
//! and each item succeeds or fails on its own.
mod common;
mod support_agent;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use support_agent::*;

const CLAIM_BATCH: &str = "/api/agent/tasks/claim-batch";
const COMPLETE_BATCH: &str = "/api/agent/tasks/complete-batch";

/// Far above every wait_seconds used: a waiter that is not woken answers 204 first.
const BOUND: u64 = 45;

async fn claim_batch_with(
    api: &Api,
    headers: &[(&str, String)],
    body: Value,
) -> (StatusCode, Value) {
    api.call(Method::POST, CLAIM_BATCH, Some(body), headers)
        .await
}

/// claim-batch without identity headers (open mode: the sessions are in the body).
async fn claim_batch(api: &Api, body: Value) -> (StatusCode, Value) {
    claim_batch_with(api, &[], body).await
}

/// Asserts a 200 claim-batch answer, checks each claim's shape for its session and returns the
/// claims by session, in answer order.
#[track_caller]
fn expect_claims(resp: (StatusCode, Value)) -> Vec<(String, Value)> {
    let (s, v) = resp;
    assert_eq!(s, StatusCode::OK, "claim-batch: {v}");
    let claims = v["claims"].as_array().expect("claims array").clone();
    assert!(!claims.is_empty(), "200 carries at least one claim: {v}");
    claims
        .into_iter()
        .map(|c| {
            let sid = str_of(&c, "session_id");
            check_claim_shape(&sid, &c);
            (sid, c)
        })
        .collect()
}

async fn complete_batch_with(api: &Api, headers: &[(&str, String)], items: Value) -> Vec<Value> {
    let (s, v) = api
        .call(
            Method::POST,
            COMPLETE_BATCH,
            Some(json!({ "items": items })),
            headers,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "complete-batch: {v}");
    v["results"].as_array().expect("results array").clone()
}

async fn complete_batch(api: &Api, items: Value) -> Vec<Value> {
    complete_batch_with(api, &[], items).await
}

#[track_caller]
fn item_error(result: &Value, status: u16, code: &str) {
    assert_eq!(result["ok"], false, "{result}");
    assert_eq!(result["error"]["code"], code, "{result}");
    assert_eq!(result["error"]["status"], status, "{result}");
    assert!(
        result["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{result}"
    );
}

#[tokio::test]
async fn one_request_claims_one_run_per_session_in_queue_order() {
    let srv = clock_server();
    let mut runs = Vec::new();
    for (n, priority) in ["low", "urgent", "medium", "high", "low"]
        .iter()
        .enumerate()
    {
        runs.push(queued(&srv, &format!("job {n}"), json!({"priority": priority})).await);
    }
    let claims = expect_claims(
        claim_batch(
            &srv,
            json!({"sessions": ["w-a", "w-b", "w-c"], "lease_seconds": 60}),
        )
        .await,
    );
    // Sessions in the order listed, each taking the best run left: urgent, high, medium.
    let got: Vec<(String, String)> = claims.iter().map(|(s, c)| (s.clone(), run_of(c))).collect();
    assert_eq!(
        got,
        vec![
            ("w-a".to_string(), runs[1].1.clone()),
            ("w-b".to_string(), runs[3].1.clone()),
            ("w-c".to_string(), runs[2].1.clone()),
        ]
    );
    for (sid, c) in &claims {
        let run = srv.get_run(&run_of(c)).await;
        assert_eq!(run["status"], "claimed", "{run}");
        assert_eq!(run["session_id"], sid.as_str(), "{run}");
        // One claim event per run, by its own session, through the batch endpoint.
        let e = the_event(&srv, &str_of(&c["task"], "id"), "task.run_claimed").await;
        assert_eq!(e["actor"], session_actor(sid), "{e}");
        assert_eq!(e["origin"]["ref"], "tasks.claim_batch", "{e}");
        assert_eq!(
            e["payload"]["claim_token_hash"],
            c["lease"]["claim_token_hash"]
        );
    }

    // Sessions that hold a lease get nothing more; the others share what is left.
    let more = expect_claims(
        claim_batch(
            &srv,
            json!({"sessions": ["w-a", "w-d", "w-b", "w-e", "w-f"]}),
        )
        .await,
    );
    let sessions: Vec<&str> = more.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sessions, ["w-d", "w-e"]);
    let all: HashSet<String> = claims
        .iter()
        .chain(more.iter())
        .map(|(_, c)| run_of(c))
        .collect();
    assert_eq!(all.len(), 5, "every run claimed once");

    // Nothing left: 204 with an empty body, as claim-next.
    let (s, v) = claim_batch(&srv, json!({"sessions": ["w-f"]})).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert!(v.is_null(), "{v}");
    // Every session busy: 409 lease_held, as claim-next for one session that holds a lease.
    let (s, v) = claim_batch(&srv, json!({"sessions": ["w-a", "w-b"]})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "lease_held");
    // The single-run endpoint sees the batch's leases as its own.
    let (s, v) = claim_next(&srv, "w-a", json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "lease_held");
    lease_ok(&srv, "w-a", &runs[1].1, "heartbeat", json!({})).await;
}

#[tokio::test]
async fn claim_batch_shares_the_claim_next_criteria_and_idempotency() {
    let srv = clock_server();
    let (_, gpu) = queued(&srv, "gpu", json!({"required_capabilities": ["gpu"]})).await;
    let (_, low) = queued(&srv, "low", json!({"priority": "low"})).await;
    let (_, mine) = queued(
        &srv,
        "owned",
        json!({"owner": {"kind": "agent_session", "ref": "w-2"}}),
    )
    .await;
    let (_, pooled) = queued(
        &srv,
        "for the builder pool",
        json!({"owner": {"kind": "pool", "ref": "builder"}, "priority": "low"}),
    )
    .await;
    // priority_min 20 leaves out the low runs; only w-2 may take the run it owns; nobody offers gpu.
    let body = json!({"sessions": ["w-1", "w-2"], "priority_min": 20, "idempotency_key": "k-1"});
    let claims = expect_claims(claim_batch(&srv, body.clone()).await);
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].0, "w-2");
    assert_eq!(run_of(&claims[0].1), mine);
    // A retry with the same key answers the same claim instead of lease_held.
    let again = expect_claims(claim_batch(&srv, body).await);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1["lease"], claims[0].1["lease"]);
    assert_eq!(run_status(&srv, &gpu).await, "queued");
    assert_eq!(run_status(&srv, &low).await, "queued");
    let claims = expect_claims(
        claim_batch(
            &srv,
            json!({"sessions": ["w-1", "w-3"], "required_capabilities": ["gpu"]}),
        )
        .await,
    );
    let got: Vec<(String, String)> = claims.iter().map(|(s, c)| (s.clone(), run_of(c))).collect();
    assert_eq!(
        got,
        vec![("w-1".to_string(), gpu), ("w-3".to_string(), low)]
    );
    // A run owned by a pool goes to the sessions of a worker announcing that agent name.
    let (s, v) = claim_batch(&srv, json!({"sessions": ["w-4"]})).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let claims = expect_claims(
        claim_batch_with(
            &srv,
            &[("X-AGH-Agent", "builder".to_string())],
            json!({"sessions": ["w-4"]}),
        )
        .await,
    );
    assert_eq!(run_of(&claims[0].1), pooled);
    let detail = srv.get(&format!("/api/task-runs/{pooled}")).await.1;
    assert_eq!(
        detail["run"]["session"]["agent_name"], "builder",
        "{detail}"
    );
}

#[tokio::test]
async fn complete_batch_applies_each_item_on_its_own_in_request_order() {
    let srv = clock_server();
    let mut tasks = Vec::new();
    for n in 0..4 {
        tasks.push(queued(&srv, &format!("job {n}"), json!({})).await);
    }
    let claims =
        expect_claims(claim_batch(&srv, json!({"sessions": ["s-1", "s-2", "s-3", "s-4"]})).await);
    let run = |sid: &str| run_of(&claims.iter().find(|(s, _)| s == sid).expect("claimed").1);
    let task_of = |rid: &str| {
        tasks
            .iter()
            .find(|(_, r)| r == rid)
            .map(|(t, _)| t.clone())
            .unwrap()
    };
    let (r1, r2, r3, r4) = (run("s-1"), run("s-2"), run("s-3"), run("s-4"));
    let results = complete_batch(
        &srv,
        json!([
            {"run_id": r1, "session_id": "s-1", "outcome": "completed", "result": {"ok": 1}},
            // Not s-3's lease: fenced, changes nothing.
            {"run_id": r4, "session_id": "s-3", "outcome": "completed"},
            {"run_id": r2, "session_id": "s-2", "outcome": "failed", "error": "boom",
             "metadata": {"exit": 2}},
            {"run_id": r3, "session_id": "s-3", "outcome": "released", "reason": "shutting down"},
            // A session that holds nothing.
            {"run_id": r4, "session_id": "nobody", "outcome": "failed", "error": "x"},
            // Invalid items are refused alone.
            {"run_id": r4, "session_id": "s-4", "outcome": "done"},
            {"run_id": r4, "session_id": "s-4", "outcome": "failed"},
            {"run_id": r4, "session_id": "s-4", "outcome": "completed",
             "result": {"claim_token": "x"}},
            {"session_id": "s-4", "outcome": "completed"},
            {"run_id": "run-missing", "session_id": "s-4", "outcome": "completed"},
        ]),
    )
    .await;
    let ids: Vec<&str> = results
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            r1.as_str(),
            &r4,
            &r2,
            &r3,
            &r4,
            &r4,
            &r4,
            &r4,
            "",
            "run-missing"
        ]
    );
    assert_eq!(results[0]["ok"], true, "{}", results[0]);
    assert_eq!(results[0]["lease"]["status"], "completed");
    assert_eq!(results[0]["lease"]["run_id"], r1.as_str());
    // s-3 holds r3: another run is foreign to it.
    item_error(&results[1], 403, "foreign_run");
    assert_eq!(results[2]["lease"]["status"], "failed", "{}", results[2]);
    assert_eq!(results[3]["lease"]["status"], "queued", "{}", results[3]);
    item_error(&results[4], 409, "no_active_lease");
    item_error(&results[5], 422, "validation_failed");
    item_error(&results[6], 422, "validation_failed");
    item_error(&results[7], 422, "validation_failed");
    item_error(&results[8], 422, "validation_failed");
    // s-4 holds r4; an unknown run is not its lease either.
    item_error(&results[9], 403, "foreign_run");

    let r1_run = srv.get_run(&r1).await;
    assert_eq!(r1_run["status"], "completed");
    assert_eq!(r1_run["result"], json!({"ok": 1}));
    let r2_run = srv.get_run(&r2).await;
    assert_eq!(r2_run["status"], "failed");
    assert_eq!(r2_run["error"], "boom");
    assert_eq!(run_status(&srv, &r3).await, "queued");
    assert_eq!(run_status(&srv, &r4).await, "claimed");
    assert_eq!(srv.status_of(&task_of(&r1)).await, "completed");

    // Each applied item left its event, by its session; the refused ones left none.
    let e = the_event(&srv, &task_of(&r1), "task.run_completed").await;
    assert_eq!(e["actor"], session_actor("s-1"), "{e}");
    assert_eq!(e["origin"]["ref"], "tasks.complete_batch", "{e}");
    let e = the_event(&srv, &task_of(&r2), "task.run_failed").await;
    assert_eq!(e["actor"], session_actor("s-2"), "{e}");
    let e = the_event(&srv, &task_of(&r3), "task.run_released").await;
    assert_eq!(e["payload"]["reason"], "shutting down", "{e}");
    let r4_events = srv.events(&task_of(&r4)).await;
    assert_eq!(count_events(&r4_events, "task.run_completed"), 0);
    assert_eq!(count_events(&r4_events, "task.run_failed"), 0);
    // The timeline shows each run's story in order.
    let timeline = srv
        .timeline(&task_of(&r1), "after_sequence=0&limit=100")
        .await;
    let kinds: Vec<String> = timeline
        .iter()
        .filter_map(|i| i["type"].as_str().or(i["event_type"].as_str()))
        .map(str::to_string)
        .collect();
    let claimed = kinds.iter().position(|k| k == "task.run_claimed");
    let completed = kinds.iter().position(|k| k == "task.run_completed");
    assert!(
        claimed.is_some() && completed.is_some() && claimed < completed,
        "{kinds:?}"
    );

    // The sessions that finished may claim again; the one still holding r4 may not.
    let claims = expect_claims(claim_batch(&srv, json!({"sessions": ["s-1", "s-4"]})).await);
    assert_eq!(claims.len(), 1);
    assert_eq!((claims[0].0.as_str(), run_of(&claims[0].1)), ("s-1", r3));
}

#[tokio::test]
async fn a_stale_lease_in_a_batch_is_fenced_without_affecting_the_others() {
    let srv = clock_server();
    let (_, short) = queued(&srv, "short lease", json!({"priority": "urgent"})).await;
    let (_, long) = queued(&srv, "long lease", json!({})).await;
    let first =
        expect_claims(claim_batch(&srv, json!({"sessions": ["old"], "lease_seconds": 10})).await);
    assert_eq!(run_of(&first[0].1), short);
    expect_claims(claim_batch(&srv, json!({"sessions": ["live"], "lease_seconds": 300})).await);
    // The short lease lapses and its run is requeued, then claimed by another session.
    assert_eq!(advance_recovering(&srv, 11.0).await, 1);
    let newer = expect_claims(claim_batch(&srv, json!({"sessions": ["new"]})).await);
    assert_eq!(run_of(&newer[0].1), short);
    let results = complete_batch(
        &srv,
        json!([
            {"run_id": short, "session_id": "old", "outcome": "completed"},
            {"run_id": long, "session_id": "live", "outcome": "completed"},
        ]),
    )
    .await;
    item_error(&results[0], 409, "no_active_lease");
    assert_eq!(results[1]["ok"], true, "{}", results[1]);
    assert_eq!(run_status(&srv, &long).await, "completed");
    // The newer holder's claim is untouched.
    let run = srv.get_run(&short).await;
    assert_eq!(run["status"], "claimed");
    assert_eq!(run["session_id"], "new");
    assert_eq!(
        run["claim_token_hash"],
        newer[0].1["lease"]["claim_token_hash"]
    );
}

/// Spawns a long-polling claim-batch and returns once the server has made its first attempt
/// (the session of `probe_run`, one of `sessions`, was seen after the clock moved).
async fn parked_batch(api: &Api, sessions: Value, probe_run: &str, wait_seconds: i64) -> Waiter {
    let now = micros(&str_of(&advance(api, 1.0).await, "now"));
    assert!(last_seen(api, probe_run).await < now);
    let client = api.clone();
    let body = json!({"sessions": sessions, "wait": true, "wait_seconds": wait_seconds});
    let waiter = tokio::spawn(async move { claim_batch(&client, body).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() && last_seen(api, probe_run).await < now {
        assert!(
            Instant::now() < deadline,
            "the claim-batch never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    waiter
}

#[tokio::test]
async fn a_parked_claim_batch_wakes_on_enqueue_and_takes_what_there_is() {
    let srv = clock_server();
    let probe = probe_session(&srv, "p-1").await;
    let waiter = parked_batch(&srv, json!(["p-1", "p-2", "p-3"]), &probe, 30).await;
    assert!(!waiter.is_finished(), "nothing to claim yet");
    let (tid, rid) = queued(&srv, "new work", json!({})).await;
    let claims = expect_claims(answer(waiter, BOUND).await);
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].0, "p-1");
    assert_eq!(run_of(&claims[0].1), rid);
    assert_eq!(count_events(&srv.events(&tid).await, "task.run_claimed"), 1);
}

#[tokio::test]
async fn a_parked_claim_batch_answers_204_when_the_wait_ends() {
    let srv = clock_server();
    let (s, v) = claim_batch(
        &srv,
        json!({"sessions": ["a", "b"], "wait": true, "wait_seconds": 0}),
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
}

/// Waits until the server has seen every parked claim's client go.
async fn until_nothing_parked(srv: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = srv.call(Method::GET, "/metrics", None, &[]).await;
        let text = v.as_str().unwrap_or_default();
        if text.lines().any(|l| l == "tasklane_parked_claimers 0") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a parked claim stayed:
{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_claim_batch_whose_client_has_gone_claims_nothing() {
    let srv = clock_server();
    let probe = probe_session(&srv, "gone-1").await;
    let waiter = parked_batch(&srv, json!(["gone-1", "gone-2"]), &probe, 30).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    until_nothing_parked(&srv).await;
    let (tid, rid) = queued(&srv, "after the disconnect", json!({})).await;
    let (tid2, rid2) = queued(&srv, "and another", json!({})).await;
    // Let any (wrongly) surviving waiter act on the wake-up before looking.
    srv.task("one more write").await;
    for (t, r) in [(&tid, &rid), (&tid2, &rid2)] {
        assert_eq!(run_status(&srv, r).await, "queued");
        assert_eq!(count_events(&srv.events(t).await, "task.run_claimed"), 0);
    }
    let claims = expect_claims(claim_batch(&srv, json!({"sessions": ["gone-1", "gone-2"]})).await);
    assert_eq!(claims.len(), 2);
}

#[tokio::test]
async fn sessions_are_namespaced_by_the_token_in_a_batch() {
    let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token")]);
    let db = srv.database().to_string();
    let bot = create_token(&db, "agent", "bot");
    let other = create_token(&db, "agent", "other-bot");
    let operator = create_token(&db, "operator", "ops");
    let viewer = create_token(&db, "viewer", "watcher");
    let deadline = Instant::now() + Duration::from_secs(5);
    for token in [&bot, &other, &operator, &viewer] {
        while srv
            .call(Method::GET, "/api/tasks", None, &bearer(token))
            .await
            .0
            != StatusCode::OK
        {
            assert!(Instant::now() < deadline, "token never accepted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let ops = bearer(&operator);
    let mut runs = Vec::new();
    for n in 0..3 {
        let (s, v) = srv
            .call(
                Method::POST,
                "/api/tasks",
                Some(json!({"scope": "global", "title": format!("job {n}")})),
                &ops,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let tid = id(&v["task"]);
        let (s, v) = srv
            .call(
                Method::POST,
                &format!("/api/tasks/{tid}/start"),
                Some(json!({})),
                &ops,
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        runs.push(id(&v["run"]));
    }
    // bot's session "s" holds a lease through claim-next.
    let held = expect_claim(
        "s",
        claim_next_with(&srv, &bearer_as(&bot, "s"), json!({})).await,
    );
    // other-bot's "s" is another session: it claims; bot's "s" is busy.
    let theirs =
        expect_claims(claim_batch_with(&srv, &bearer(&other), json!({"sessions": ["s"]})).await);
    assert_eq!(theirs.len(), 1);
    let (s, v) = claim_batch_with(&srv, &bearer(&bot), json!({"sessions": ["s"]})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "lease_held");
    // Neither token can report on the other's lease of "s".
    let results = complete_batch_with(
        &srv,
        &bearer(&other),
        json!([{"run_id": run_of(&held), "session_id": "s", "outcome": "completed"}]),
    )
    .await;
    item_error(&results[0], 403, "foreign_run");
    let (s, v) = srv
        .call(
            Method::GET,
            &format!("/api/task-runs/{}", run_of(&held)),
            None,
            &ops,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["run"]["run"]["status"], "claimed", "{v}");
    let results = complete_batch_with(
        &srv,
        &bearer(&bot),
        json!([
            {"run_id": run_of(&theirs[0].1), "session_id": "s", "outcome": "completed"},
            {"run_id": run_of(&held), "session_id": "s", "outcome": "completed"},
        ]),
    )
    .await;
    item_error(&results[0], 403, "foreign_run");
    assert_eq!(results[1]["ok"], true, "{}", results[1]);
    // Only agents use the batch endpoints.
    for token in [&operator, &viewer] {
        let (s, v) = claim_batch_with(&srv, &bearer(token), json!({"sessions": ["x"]})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["code"], "forbidden_role");
    }
}

#[tokio::test]
async fn batch_requests_are_bounded_and_validated() {
    let srv = clock_server();
    let many: Vec<String> = (0..101).map(|n| format!("s-{n}")).collect();
    let items: Vec<Value> = (0..101)
        .map(|n| json!({"run_id": format!("r-{n}"), "session_id": "s", "outcome": "completed"}))
        .collect();
    for (path, body, status, code) in [
        (CLAIM_BATCH, json!({}), 422, "validation_failed"),
        (
            CLAIM_BATCH,
            json!({"sessions": []}),
            422,
            "validation_failed",
        ),
        (
            CLAIM_BATCH,
            json!({"sessions": many}),
            422,
            "validation_failed",
        ),
        (
            CLAIM_BATCH,
            json!({"sessions": ["a", " a "]}),
            422,
            "validation_failed",
        ),
        (
            CLAIM_BATCH,
            json!({"sessions": ["a", "  "]}),
            422,
            "validation_failed",
        ),
        (
            CLAIM_BATCH,
            json!({"sessions": ["a\u{7}"]}),
            422,
            "validation_failed",
        ),
        (
            CLAIM_BATCH,
            json!({"sessions": ["x".repeat(257)]}),
            422,
            "validation_failed",
        ),
        (CLAIM_BATCH, json!({"sessions": "a"}), 400, "invalid_json"),
        (CLAIM_BATCH, json!({"sessions": [1]}), 400, "invalid_json"),
        (
            CLAIM_BATCH,
            json!({"sessions": ["a"], "lease_seconds": -1}),
            422,
            "validation_failed",
        ),
        (
            CLAIM_BATCH,
            json!({"sessions": ["a"], "wait_seconds": 301}),
            422,
            "validation_failed",
        ),
        (
            CLAIM_BATCH,
            json!({"sessions": ["a"], "workspace_id": "a b"}),
            422,
            "validation_failed",
        ),
        (COMPLETE_BATCH, json!({}), 422, "validation_failed"),
        (
            COMPLETE_BATCH,
            json!({"items": []}),
            422,
            "validation_failed",
        ),
        (
            COMPLETE_BATCH,
            json!({"items": items}),
            422,
            "validation_failed",
        ),
        (COMPLETE_BATCH, json!({"items": {}}), 400, "invalid_json"),
        (
            COMPLETE_BATCH,
            json!({"items": [{"run_id": 5}]}),
            400,
            "invalid_json",
        ),
    ] {
        let (s, v) = srv.call(Method::POST, path, Some(body.clone()), &[]).await;
        assert_eq!(s.as_u16(), status, "{path} {body}: {v}");
        assert_eq!(v["code"], code, "{path} {body}: {v}");
    }
    // 100 is allowed.
    let hundred: Vec<String> = (0..100).map(|n| format!("s-{n}")).collect();
    let (s, v) = claim_batch(&srv, json!({"sessions": hundred})).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    // A body over the 4 MiB limit is refused before anything runs.
    let big = "x".repeat(60 * 1024);
    let items: Vec<Value> = (0..80)
        .map(|n| {
            json!({"run_id": format!("r-{n}"), "session_id": "s", "outcome": "completed",
                        "result": {"blob": big}})
        })
        .collect();
    let (s, v) = srv
        .call(
            Method::POST,
            COMPLETE_BATCH,
            Some(json!({ "items": items })),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_never_hand_out_a_run_twice() {
    let srv = clock_server();
    let mut queued_runs = HashSet::new();
    for n in 0..25 {
        queued_runs.insert(queued(&srv, &format!("job {n}"), json!({})).await.1);
    }
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let api = srv.api.clone();
            let sessions: Vec<String> = (0..10).map(|k| format!("w{w}-s{k}")).collect();
            tokio::spawn(async move { claim_batch(&api, json!({ "sessions": sessions })).await })
        })
        .collect();
    let mut claimed = Vec::new();
    for w in workers {
        let (s, v) = w.await.unwrap();
        if s == StatusCode::OK {
            claimed.extend(expect_claims((s, v)).into_iter().map(|(_, c)| run_of(&c)));
        } else {
            assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
        }
    }
    let distinct: HashSet<String> = claimed.iter().cloned().collect();
    assert_eq!(claimed.len(), 25, "every run claimed: {claimed:?}");
    assert_eq!(distinct, queued_runs);
}
