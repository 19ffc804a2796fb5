//! claim-next: response shape, validation, identity, one lease per session, idempotency,
//! eligibility (status, scope/workspace, priority, capabilities, owner) and ordering.
mod common;
mod support_agent;

use common::*;
use support_agent::*;

#[tokio::test]
async fn a_claim_returns_task_run_and_lease_with_only_the_token_hash() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "claim me", json!({"priority": "high"})).await;
    let now = clock_now(&srv).await;

    let (s, body) = claim_next(&srv, "s-1", json!({"lease_seconds": 60})).await;
    let claim = expect_claim("s-1", (s, body.clone()));
    assert_eq!(run_of(&claim), rid);
    assert_eq!(claim["task"]["id"], tid);
    assert_eq!(claim["task"]["title"], "claim me");
    assert_eq!(claim["run"]["attempt"], 1, "{claim}");
    assert_eq!(
        micros(&str_of(&claim["lease"], "lease_until")),
        now + 60 * SECOND,
        "lease_until = now + lease_seconds: {claim}"
    );
    // A global task has no coordination channel.
    assert_absent(&claim, "coordination_channel");
    // Nothing that looks like a raw token anywhere: the only secret-ish value is the hash.
    let text = body.to_string();
    assert!(
        !text.contains("agh_claim_"),
        "raw claim token leaked: {text}"
    );

    // The run as stored.
    let run = srv.get_run(&rid).await;
    assert_eq!(run["status"], "claimed");
    assert_eq!(run["session_id"], "s-1");
    assert_eq!(run["claimed_by"], session_actor("s-1"));
    assert_eq!(run["claim_token_hash"], claim["lease"]["claim_token_hash"]);
    assert_eq!(run["lease_until"], claim["lease"]["lease_until"]);

    // The event: payload, actor and origin.
    let e = the_event(&srv, &tid, "task.run_claimed").await;
    assert_eq!(e["actor"], session_actor("s-1"), "{e}");
    assert_eq!(e["origin"], http_origin("claim_next"), "{e}");
    let p = &e["payload"];
    assert_eq!(p["status"], "claimed", "{e}");
    assert!(p["task_status"].is_string(), "{e}");
    assert_eq!(p["claimed_by"], session_actor("s-1"), "{e}");
    assert_eq!(
        p["claim_token_hash"], claim["lease"]["claim_token_hash"],
        "{e}"
    );
    assert_eq!(p["lease_until"], claim["lease"]["lease_until"], "{e}");
    assert_eq!(e["run_id"], rid, "{e}");
}

#[tokio::test]
async fn nothing_claimable_answers_204_with_an_empty_body() {
    let srv = clock_server();
    claim_nothing(&srv, "s-1", json!({})).await;
    // An empty request body is `{}`.
    let (s, v) = srv
        .call(Method::POST, CLAIM_NEXT, None, &agent("s-1"))
        .await;
    expect_nothing("s-1", (s, v));
    // A task without a run is not work.
    srv.task("no run").await;
    claim_nothing(&srv, "s-1", json!({})).await;
}

#[tokio::test]
async fn lease_seconds_default_bounds_and_validation() {
    let srv = clock_server();
    for bad in [-1, 86_401, 1_000_000] {
        let r = claim_next(&srv, "s-v", json!({"lease_seconds": bad})).await;
        assert_err(&r, 422, "validation_failed");
    }
    let now = clock_now(&srv).await;
    for (i, (asked, expected)) in [(0, 300), (86_400, 86_400), (1, 1)].into_iter().enumerate() {
        queued(&srv, &format!("t{i}"), json!({})).await;
        let sid = format!("s-{i}");
        let c = claim(&srv, &sid, json!({"lease_seconds": asked})).await;
        assert_eq!(
            micros(&str_of(&c["lease"], "lease_until")),
            now + expected * SECOND,
            "lease_seconds {asked}: {c}"
        );
    }
    // Omitted means the default too.
    queued(&srv, "default", json!({})).await;
    let c = claim(&srv, "s-default", json!({})).await;
    assert_eq!(
        micros(&str_of(&c["lease"], "lease_until")),
        now + 300 * SECOND
    );
}

#[tokio::test]
async fn claim_next_rejects_invalid_criteria() {
    let srv = clock_server();
    queued(&srv, "work", json!({})).await;
    for body in [
        json!({"wait_seconds": 301}),
        json!({"wait_seconds": -1}),
        json!({"priority_min": -1}),
        json!({"required_capabilities": ["has space"]}),
        json!({"required_capabilities": [""]}),
        json!({"required_capabilities": ["a,b"]}),
        json!({"workspace_id": "no spaces allowed"}),
        json!({"workspace_id": "bad*char"}),
    ] {
        let r = claim_next(&srv, "s-1", body.clone()).await;
        assert_eq!(r.0.as_u16(), 422, "{body}: {:?}", r);
    }
    // Wrong JSON types and broken JSON are 400.
    let r = claim_next(&srv, "s-1", json!({"lease_seconds": "ten"})).await;
    assert_status(&r, 400);
    let r = srv
        .call_raw(
            Method::POST,
            CLAIM_NEXT,
            b"{not json".to_vec(),
            Some("application/json"),
            &agent("s-1"),
        )
        .await;
    assert_status(&r, 400);
    // None of that claimed anything; the limits themselves are accepted.
    claim(
        &srv,
        "s-1",
        json!({"wait_seconds": 300, "priority_min": 0, "wait": false}),
    )
    .await;
}

#[tokio::test]
async fn agent_endpoints_need_an_agent_session_identity() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "work", json!({})).await;
    let only_agent_name = vec![("X-AGH-Agent", "builder".to_string())];
    let blank_session = vec![("X-AGH-Session-ID", "   ".to_string())];
    for headers in [no_headers(), only_agent_name, blank_session] {
        let r = claim_next_with(&srv, &headers, json!({})).await;
        assert_err(&r, 401, "identity_required");
        for op in ["heartbeat", "complete", "fail", "release"] {
            let r = srv
                .call(
                    Method::POST,
                    &format!("/api/agent/tasks/{rid}/{op}"),
                    Some(json!({"error": "x"})),
                    &headers,
                )
                .await;
            assert_err(&r, 401, "identity_required");
        }
    }
    assert_eq!(run_status(&srv, &rid).await, "queued");
}

#[tokio::test]
async fn a_session_holds_at_most_one_lease_checked_before_availability() {
    let srv = clock_server();
    let (_, r1) = queued(&srv, "one", json!({})).await;
    let c = claim(&srv, "s-1", json!({})).await;
    assert_eq!(run_of(&c), r1);
    // No work left: still 409, not 204.
    assert_err(&claim_next(&srv, "s-1", json!({})).await, 409, "lease_held");
    // With work available: 409, and the work stays for others.
    let (_, r2) = queued(&srv, "two", json!({})).await;
    assert_err(&claim_next(&srv, "s-1", json!({})).await, 409, "lease_held");
    // A long poll answers 409 at once as well.
    assert_err(
        &claim_next(&srv, "s-1", json!({"wait": true, "wait_seconds": 30})).await,
        409,
        "lease_held",
    );
    assert_eq!(run_status(&srv, &r2).await, "queued");
    assert_eq!(run_of(&claim(&srv, "s-2", json!({})).await), r2);
    // Once the lease ends the session may claim again.
    lease_ok(&srv, "s-1", &r1, "complete", json!({})).await;
    let (_, r3) = queued(&srv, "three", json!({})).await;
    assert_eq!(run_of(&claim(&srv, "s-1", json!({})).await), r3);
}

#[tokio::test]
async fn a_run_bound_to_the_session_without_a_lease_also_blocks_claiming() {
    let srv = clock_server();
    let (_, bound) = queued(&srv, "operator run", json!({})).await;
    srv.claim(&bound).await;
    let (s, v) = srv
        .post(
            &format!("/api/task-runs/{bound}/attach-session"),
            json!({"session_id": "s-att"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    queued(&srv, "free", json!({})).await;
    assert_err(
        &claim_next(&srv, "s-att", json!({})).await,
        409,
        "lease_held",
    );
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_claim_while_the_lease_lives() {
    let srv = clock_server();
    let (tid, rid) = queued(&srv, "keyed", json!({})).await;
    advance(&srv, 1.0).await;
    queued(&srv, "other", json!({})).await;
    let first = claim(
        &srv,
        "s-1",
        json!({"idempotency_key": "k-1", "lease_seconds": 30}),
    )
    .await;
    assert_eq!(run_of(&first), rid);
    advance(&srv, 5.0).await;
    let again = claim(
        &srv,
        "s-1",
        json!({"idempotency_key": "k-1", "lease_seconds": 30}),
    )
    .await;
    assert_eq!(run_of(&again), rid);
    assert_eq!(hash_of(&again), hash_of(&first));
    assert_eq!(again["lease"]["lease_until"], first["lease"]["lease_until"]);
    assert_eq!(
        count_events(&srv.events(&tid).await, "task.run_claimed"),
        1,
        "a replay records no second claim"
    );
    // Another key, or none, is a second claim attempt: the session is busy.
    assert_err(
        &claim_next(&srv, "s-1", json!({"idempotency_key": "k-2"})).await,
        409,
        "lease_held",
    );
    assert_err(&claim_next(&srv, "s-1", json!({})).await, 409, "lease_held");
    // The key belongs to the session: another session with it gets its own claim.
    let other = claim(&srv, "s-2", json!({"idempotency_key": "k-1"})).await;
    assert_ne!(run_of(&other), rid);

    // Once the lease has ended, the key no longer replays it.
    lease_ok(&srv, "s-1", &rid, "complete", json!({})).await;
    claim_nothing(&srv, "s-1", json!({"idempotency_key": "k-1"})).await;
}

#[tokio::test]
async fn an_idempotency_key_does_not_replay_an_expired_lease() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "keyed", json!({})).await;
    let first = claim(
        &srv,
        "s-1",
        json!({"idempotency_key": "k", "lease_seconds": 10}),
    )
    .await;
    assert_eq!(advance_recovering(&srv, 11.0).await, 1);
    // The run was requeued; the same key claims it afresh under a new token.
    let second = claim(
        &srv,
        "s-1",
        json!({"idempotency_key": "k", "lease_seconds": 10}),
    )
    .await;
    assert_eq!(run_of(&second), rid);
    assert_ne!(hash_of(&second), hash_of(&first));
}

#[tokio::test]
async fn priority_orders_claims_and_priority_min_filters() {
    let srv = clock_server();
    let mut runs = std::collections::HashMap::new();
    for p in ["low", "urgent", "medium", "high"] {
        let (_, rid) = queued(&srv, p, json!({"priority": p})).await;
        runs.insert(p, rid);
        advance(&srv, 1.0).await;
    }
    // priority_min above every priority matches nothing.
    claim_nothing(&srv, "s-min", json!({"priority_min": 41})).await;
    // urgent 40, high 30, medium 20, low 10.
    assert_eq!(
        run_of(&claim(&srv, "s-a", json!({"priority_min": 40})).await),
        runs["urgent"]
    );
    claim_nothing(&srv, "s-b", json!({"priority_min": 31})).await;
    assert_eq!(
        run_of(&claim(&srv, "s-b", json!({"priority_min": 30})).await),
        runs["high"]
    );
    claim_nothing(&srv, "s-c", json!({"priority_min": 21})).await;
    assert_eq!(run_of(&claim(&srv, "s-c", json!({})).await), runs["medium"]);
    claim_nothing(&srv, "s-d", json!({"priority_min": 11})).await;
    assert_eq!(
        run_of(&claim(&srv, "s-d", json!({"priority_min": 10})).await),
        runs["low"]
    );
}

#[tokio::test]
async fn a_priority_change_after_enqueue_reorders_the_queue() {
    let srv = clock_server();
    let (_, older) = queued(&srv, "older", json!({"priority": "low"})).await;
    advance(&srv, 1.0).await;
    let (newer_task, newer) = queued(&srv, "newer", json!({"priority": "low"})).await;
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{newer_task}"),
            json!({"priority": "urgent"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(run_of(&claim(&srv, "s-1", json!({})).await), newer);
    assert_eq!(run_of(&claim(&srv, "s-2", json!({})).await), older);
}

#[tokio::test]
async fn oldest_first_within_a_priority_then_lowest_id() {
    let srv = clock_server();
    // Distinct queued_at: FIFO.
    let mut fifo = Vec::new();
    for i in 0..3 {
        fifo.push(queued(&srv, &format!("fifo {i}"), json!({})).await.1);
        advance(&srv, 1.0).await;
    }
    for (i, expected) in fifo.iter().enumerate() {
        let c = claim(&srv, &format!("fifo-{i}"), json!({})).await;
        assert_eq!(&run_of(&c), expected, "claim {i} takes the oldest run");
    }
    // The manual clock is frozen between advances: equal queued_at, so the id decides.
    let mut same = Vec::new();
    for i in 0..4 {
        same.push(queued(&srv, &format!("same {i}"), json!({})).await.1);
    }
    let queued_at: Vec<Value> = {
        let mut v = Vec::new();
        for r in &same {
            v.push(srv.get_run(r).await["queued_at"].clone());
        }
        v
    };
    assert!(
        queued_at.iter().all(|q| *q == queued_at[0]),
        "{queued_at:?}"
    );
    let mut by_id = same.clone();
    by_id.sort();
    for (i, expected) in by_id.iter().enumerate() {
        let c = claim(&srv, &format!("same-{i}"), json!({})).await;
        assert_eq!(&run_of(&c), expected, "ties break on the lowest id");
    }
}

#[tokio::test]
async fn a_released_run_keeps_its_place_at_the_front_of_its_band() {
    let srv = clock_server();
    let (_, first) = queued(&srv, "first", json!({})).await;
    advance(&srv, 1.0).await;
    let (_, second) = queued(&srv, "second", json!({})).await;
    let queued_at = srv.get_run(&first).await["queued_at"].clone();
    let c = claim(&srv, "s-1", json!({})).await;
    assert_eq!(run_of(&c), first);
    advance(&srv, 5.0).await;
    lease_ok(&srv, "s-1", &first, "release", json!({})).await;
    let run = srv.get_run(&first).await;
    assert_eq!(
        run["queued_at"], queued_at,
        "release keeps queued_at: {run}"
    );
    assert_eq!(run["attempt"], 1, "release keeps the attempt: {run}");
    assert_eq!(run_of(&claim(&srv, "s-2", json!({})).await), first);
    assert_eq!(run_of(&claim(&srv, "s-3", json!({})).await), second);
}

#[tokio::test]
async fn required_capabilities_must_all_be_offered() {
    let srv = clock_server();
    let (_, gpu) = queued(
        &srv,
        "gpu job",
        json!({"required_capabilities": ["gpu", "cuda"]}),
    )
    .await;
    claim_nothing(&srv, "s-1", json!({})).await;
    claim_nothing(&srv, "s-1", json!({"required_capabilities": ["gpu"]})).await;
    claim_nothing(
        &srv,
        "s-1",
        json!({"required_capabilities": ["cpu", "cuda"]}),
    )
    .await;
    let c = claim(
        &srv,
        "s-1",
        json!({"required_capabilities": ["cuda", "gpu", "disk"]}),
    )
    .await;
    assert_eq!(run_of(&c), gpu);

    // A run needing nothing is claimable by anyone, whatever they offer.
    let (_, plain) = queued(&srv, "plain", json!({})).await;
    assert_eq!(
        run_of(&claim(&srv, "s-2", json!({"required_capabilities": ["x"]})).await),
        plain
    );
}

#[tokio::test]
async fn unmatched_requirements_do_not_hide_later_work() {
    let srv = clock_server();
    // An older, higher-priority run the caller cannot take, then one it can.
    queued(
        &srv,
        "needs gpu",
        json!({"priority": "urgent", "required_capabilities": ["gpu"]}),
    )
    .await;
    advance(&srv, 1.0).await;
    let (_, ok) = queued(&srv, "takeable", json!({"priority": "low"})).await;
    assert_eq!(run_of(&claim(&srv, "s-1", json!({})).await), ok);
}

#[tokio::test]
async fn preferred_capabilities_rank_within_a_priority_when_the_caller_offers_any() {
    let srv = clock_server();
    let (_, none) = queued(&srv, "no preference", json!({})).await;
    advance(&srv, 1.0).await;
    let (_, one) = queued(
        &srv,
        "prefers fast",
        json!({"preferred_capabilities": ["fast"]}),
    )
    .await;
    advance(&srv, 1.0).await;
    let (_, two) = queued(
        &srv,
        "prefers fast+big",
        json!({"preferred_capabilities": ["fast", "big"]}),
    )
    .await;
    advance(&srv, 1.0).await;
    let (_, high) = queued(&srv, "high", json!({"priority": "high"})).await;

    // Priority first, whatever the preferences.
    assert_eq!(
        run_of(
            &claim(
                &srv,
                "s-0",
                json!({"required_capabilities": ["fast", "big"]})
            )
            .await
        ),
        high
    );
    // Then most preferred capabilities matched.
    assert_eq!(
        run_of(
            &claim(
                &srv,
                "s-1",
                json!({"required_capabilities": ["fast", "big"]})
            )
            .await
        ),
        two
    );
    assert_eq!(
        run_of(&claim(&srv, "s-2", json!({"required_capabilities": ["fast"]})).await),
        one
    );
    assert_eq!(
        run_of(&claim(&srv, "s-3", json!({"required_capabilities": ["fast"]})).await),
        none
    );
}

#[tokio::test]
async fn without_offered_capabilities_preferences_do_not_matter() {
    let srv = clock_server();
    let (_, older) = queued(&srv, "older", json!({})).await;
    advance(&srv, 1.0).await;
    queued(&srv, "newer", json!({"preferred_capabilities": ["fast"]})).await;
    assert_eq!(run_of(&claim(&srv, "s-1", json!({})).await), older);
}

#[tokio::test]
async fn capabilities_are_taken_from_the_task_at_enqueue() {
    let srv = clock_server();
    let task = id(&srv.task_with("patched", json!({})).await);
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{task}"),
            json!({"required_capabilities": ["rust"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rid = id(&srv.enqueue(&task).await);
    claim_nothing(&srv, "s-1", json!({})).await;
    assert_eq!(
        run_of(&claim(&srv, "s-1", json!({"required_capabilities": ["rust"]})).await),
        rid
    );
}

#[tokio::test]
async fn workspace_id_selects_workspace_tasks_and_global_callers_get_global_tasks() {
    let srv = clock_server();
    let ws_task = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "alpha", "title": "in alpha"}))
        .await);
    let ws_run = id(&srv.enqueue(&ws_task).await);
    let beta_task = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "beta", "title": "in beta"}))
        .await);
    srv.enqueue(&beta_task).await;
    advance(&srv, 1.0).await;
    let (_, global) = queued(&srv, "global", json!({})).await;

    // No workspace: only the global task, although the workspace runs are older.
    assert_eq!(run_of(&claim(&srv, "s-g", json!({})).await), global);
    claim_nothing(&srv, "s-g2", json!({})).await;
    claim_nothing(&srv, "s-x", json!({"workspace_id": "gamma"})).await;

    let c = claim(&srv, "s-a", json!({"workspace_id": "alpha"})).await;
    assert_eq!(run_of(&c), ws_run);
    // Workspace runs carry a coordination channel, in the claim, its run and its lease.
    let ch = &c["coordination_channel"];
    assert!(
        ch.is_object(),
        "workspace claim has a coordination channel: {c}"
    );
    assert_eq!(ch["purpose"], "task_run_coordination", "{ch}");
    assert_eq!(ch["workspace_id"], "alpha", "{ch}");
    assert_eq!(ch["task_id"], ws_task, "{ch}");
    assert_eq!(ch["run_id"], ws_run, "{ch}");
    assert_eq!(
        ch["allowed_message_kinds"],
        json!([
            "status",
            "request",
            "reply",
            "blocker",
            "handoff",
            "result",
            "review_request"
        ])
    );
    assert_eq!(c["run"]["coordination_channel"], *ch, "{c}");
    assert_eq!(c["lease"]["coordination_channel"], *ch, "{c}");
    assert_eq!(c["run"]["coordination_channel_id"], ch["id"], "{c}");
    assert_eq!(c["lease"]["coordination_channel_id"], ch["id"], "{c}");
}

#[tokio::test]
async fn owner_rules_limit_who_may_claim() {
    let srv = clock_server();
    let (_, human_owned) = queued(
        &srv,
        "human owned",
        json!({"owner": {"kind": "human", "ref": "local-user"}, "priority": "urgent"}),
    )
    .await;
    let (_, mine) = queued(
        &srv,
        "session owned",
        json!({"owner": {"kind": "agent_session", "ref": "s-owner"}, "priority": "high"}),
    )
    .await;
    let (_, pool) = queued(
        &srv,
        "pool owned",
        json!({"owner": {"kind": "pool", "ref": "builders"}, "priority": "high"}),
    )
    .await;
    let (_, free) = queued(&srv, "unowned", json!({"priority": "low"})).await;

    // A session with no agent name and no ownership gets only the unowned run.
    assert_eq!(run_of(&claim(&srv, "s-plain", json!({})).await), free);
    claim_nothing(&srv, "s-plain2", json!({})).await;
    // A session of another pool gets nothing.
    expect_nothing(
        "s-testers",
        claim_next_with(&srv, &agent_named("s-testers", "testers"), json!({})).await,
    );
    // The pool's agents get the pool's run.
    let c = expect_claim(
        "s-builder",
        claim_next_with(&srv, &agent_named("s-builder", "builders"), json!({})).await,
    );
    assert_eq!(run_of(&c), pool);
    // The owning session gets its own run.
    assert_eq!(run_of(&claim(&srv, "s-owner", json!({})).await), mine);
    // Nobody ever claims human-owned work.
    claim_nothing(&srv, "s-any", json!({})).await;
    assert_eq!(run_status(&srv, &human_owned).await, "queued");
}

#[tokio::test]
async fn blocked_draft_and_unapproved_tasks_are_not_claimable() {
    let srv = clock_server();
    // Blocked by an open dependency, with a queued run.
    let blocker = srv.task("blocker").await;
    let dependent = srv.task("dependent").await;
    srv.add_dep(&dependent, &blocker).await;
    let dep_run = id(&srv.enqueue(&dependent).await);
    assert_eq!(srv.status_of(&dependent).await, "blocked");
    // Waiting for manual approval, with a queued run.
    let manual = id(&srv
        .task_with("manual", json!({"approval_policy": "manual"}))
        .await);
    let (s, v) = srv
        .post(&format!("/api/tasks/{manual}/runs"), json!({}))
        .await;
    if s == StatusCode::CREATED {
        assert_eq!(srv.status_of(&manual).await, "blocked", "{v}");
    }
    // A draft cannot even be enqueued.
    let draft = id(&srv.task_with("draft", json!({"draft": true})).await);
    let (s, _) = srv
        .post(&format!("/api/tasks/{draft}/runs"), json!({}))
        .await;
    assert_eq!(s.as_u16(), 409);

    claim_nothing(&srv, "s-1", json!({})).await;

    // Resolving the dependency makes the dependent's run claimable.
    srv.complete_task(&blocker).await;
    assert_eq!(srv.status_of(&dependent).await, "ready");
    assert_eq!(run_of(&claim(&srv, "s-1", json!({})).await), dep_run);
}

#[tokio::test]
async fn a_claim_by_an_agent_with_a_name_is_visible_in_the_run_detail() {
    let srv = clock_server();
    let (_, rid) = queued(&srv, "named", json!({})).await;
    expect_claim(
        "s-named",
        claim_next_with(&srv, &agent_named("s-named", "builders"), json!({})).await,
    );
    let (s, v) = srv.get(&format!("/api/task-runs/{rid}")).await;
    assert_eq!(s, StatusCode::OK);
    let session = &v["run"]["session"];
    assert_eq!(session["session_id"], "s-named", "{v}");
    assert_eq!(session["agent_name"], "builders", "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimable_work_behind_a_long_backlog_of_unmatched_runs_is_found() {
    use futures::stream::{self, StreamExt};
    let srv = clock_server();
    // A backlog of older, higher-priority runs that need a capability the caller lacks.
    const BACKLOG: usize = 1300;
    let created: Vec<()> = stream::iter(0..BACKLOG)
        .map(|i| {
            let api = srv.api.clone();
            async move {
                queued(
                    &api,
                    &format!("gpu {i}"),
                    json!({"priority": "high", "required_capabilities": ["gpu"]}),
                )
                .await;
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(created.len(), BACKLOG);
    advance(&srv, 1.0).await;
    let (_, cpu) = queued(&srv, "cpu work", json!({"priority": "low"})).await;
    // The caller may claim exactly one queued run: that one, however long the queue before it.
    let (s, v) = claim_next(&srv, "cpu-agent", json!({})).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "run {cpu} is claimable by this caller, yet claim-next answered {s} {v}"
    );
    assert_eq!(id(&v["claim"]["run"]), cpu);
}

#[tokio::test]
async fn a_head_of_the_queue_the_caller_may_not_take_does_not_hide_its_work() {
    let srv = clock_server();
    // Older and more urgent runs this caller may not take: another workspace, a capability it
    // lacks, another session's task, a task blocked after its run was queued.
    let other_ws = id(&srv
        .create_task(
            json!({"scope": "workspace", "workspace": "beta", "title": "beta",
                            "priority": "urgent"}),
        )
        .await);
    srv.enqueue(&other_ws).await;
    let (_, gpu) = queued(
        &srv,
        "gpu",
        json!({"scope": "workspace", "workspace": "alpha", "priority": "urgent",
               "required_capabilities": ["gpu"]}),
    )
    .await;
    queued(
        &srv,
        "someone else's",
        json!({"scope": "workspace", "workspace": "alpha", "priority": "urgent",
               "owner": {"kind": "agent_session", "ref": "s-other"}}),
    )
    .await;
    let blocker = srv.task("blocker").await;
    let (late_blocked, blocked_run) = queued(
        &srv,
        "blocked later",
        json!({"scope": "workspace", "workspace": "alpha", "priority": "urgent"}),
    )
    .await;
    srv.add_dep(&late_blocked, &blocker).await;
    assert_eq!(srv.status_of(&late_blocked).await, "blocked");
    advance(&srv, 1.0).await;
    let (_, mine) = queued(
        &srv,
        "alpha work",
        json!({"scope": "workspace", "workspace": "alpha", "priority": "low",
               "required_capabilities": ["cpu"]}),
    )
    .await;

    let alpha_cpu = json!({"workspace_id": "alpha", "required_capabilities": ["cpu"]});
    assert_eq!(run_of(&claim(&srv, "s-1", alpha_cpu.clone()).await), mine);
    claim_nothing(&srv, "s-2", alpha_cpu).await;
    // Offering the capability reaches the urgent run.
    let alpha_gpu = json!({"workspace_id": "alpha", "required_capabilities": ["gpu"]});
    assert_eq!(run_of(&claim(&srv, "s-3", alpha_gpu).await), gpu);
    // Unblocking the task makes its run claimable again.
    srv.complete_task(&blocker).await;
    assert_eq!(
        run_of(&claim(&srv, "s-4", json!({"workspace_id": "alpha"})).await),
        blocked_run
    );
}

#[tokio::test]
async fn changing_the_owner_of_a_queued_task_changes_who_may_claim_it() {
    let srv = clock_server();
    let (task, rid) = queued(
        &srv,
        "pool work",
        json!({"owner": {"kind": "pool", "ref": "builders"}}),
    )
    .await;
    claim_nothing(&srv, "s-plain", json!({})).await;
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{task}"),
            json!({"owner": {"kind": "agent_session", "ref": "s-owner"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    expect_nothing(
        "s-builder",
        claim_next_with(&srv, &agent_named("s-builder", "builders"), json!({})).await,
    );
    let (s, v) = srv
        .patch(&format!("/api/tasks/{task}"), json!({"clear_owner": true}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(run_of(&claim(&srv, "s-plain", json!({})).await), rid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_capabilities_rank_over_any_number_of_older_candidates() {
    use futures::stream::{self, StreamExt};
    let srv = clock_server();
    // More older runs of the same priority than any window a claim could scan.
    const OLDER: usize = 1100;
    let created: Vec<()> = stream::iter(0..OLDER)
        .map(|i| {
            let api = srv.api.clone();
            async move {
                queued(&api, &format!("plain {i}"), json!({})).await;
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(created.len(), OLDER);
    advance(&srv, 1.0).await;
    let (_, preferred) = queued(
        &srv,
        "prefers fast",
        json!({"preferred_capabilities": ["fast"]}),
    )
    .await;
    assert_eq!(
        run_of(&claim(&srv, "s-fast", json!({"required_capabilities": ["fast"]})).await),
        preferred
    );
}
