//! `GET /api/observe/tasks/dashboard`: the reference's worked examples with the
//! same numbers, the thresholds on the injectable clock, filters and validation.

mod common;
mod observe_support;

use common::*;
use observe_support::*;

/// Six tasks, four runs; the clock is moved so the run times are exactly those
/// of the fixture (minutes before the dashboard is read at t = 9).
#[tokio::test]
async fn worked_example_aggregates_cards_and_breakdown() {
    let srv = clock_server();
    // t = 0 (now - 9m)
    let ready = id(&srv
        .task_with("ready urgent", json!({"priority": "urgent"}))
        .await);
    let approval = id(&srv
        .task_with("approval", json!({"approval_policy": "manual"}))
        .await);
    srv.add_dep(&approval, &ready).await;
    let dep_blocked = srv.task("dependency blocked").await;
    srv.add_dep(&dep_blocked, &ready).await;
    let working = id(&srv
        .task_with("in progress", json!({"owner": owner("human", "alice")}))
        .await);
    let failing = id(&srv.task_with("failed", json!({"max_attempts": 1})).await);
    let completing = srv.task("completed").await;
    let failed_run = id(&srv.enqueue(&failing).await); // queued -9
    minutes(&srv, 1.0).await; // -8
    srv.claim(&failed_run).await; // claimed -8
    let running_run = id(&srv.enqueue(&working).await); // queued -8
    let completed_run = id(&srv.enqueue(&completing).await); // queued -8
    minutes(&srv, 1.0).await; // -7
    srv.claim(&running_run).await; // claimed -7
    minutes(&srv, 1.0).await; // -6
    srv.start_run(&failed_run).await; // started -6
    srv.claim(&completed_run).await; // claimed -6
    minutes(&srv, 1.0).await; // -5
    post_ok(
        &srv,
        &format!("/api/task-runs/{running_run}/attach-session"),
        json!({"session_id": "sess-live"}),
    )
    .await;
    srv.start_run(&running_run).await; // started -5, with a session
    minutes(&srv, 1.0).await; // -4
    srv.start_run(&completed_run).await; // started -4
    minutes(&srv, 1.0).await; // -3
    let queued_run = id(&srv.enqueue(&ready).await); // queued -3
    minutes(&srv, 1.0).await; // -2
    srv.fail_run(&failed_run, "boom").await; // ended -2
    minutes(&srv, 1.0).await; // -1
    srv.complete_run(&completed_run, None).await; // ended -1, task closed -1
    minutes(&srv, 1.0).await; // now

    let d = dashboard(&srv, "").await;
    let t = &d["totals"];
    assert_eq!(t["tasks_total"], 6, "{d}");
    assert_eq!(t["runs_total"], 4);
    assert_eq!(t["blocked_tasks"], 2);
    assert_eq!(t["awaiting_approval_tasks"], 1);
    assert_eq!(t["dependency_blocked_tasks"], 2);
    assert_eq!(t["active_runs"], 2);
    assert_eq!(t["queued_runs"], 1);
    assert_eq!(t["running_runs"], 1);
    assert_eq!(t["failed_runs"], 1);
    assert_eq!(t["completed_runs"], 1);

    let lat = &d["cards"]["latency"];
    assert_eq!(
        lat["claim_latency_ms"],
        json!({"samples": 3, "average_ms": 80000, "maximum_ms": 120000})
    );
    assert_eq!(
        lat["start_latency_ms"],
        json!({"samples": 3, "average_ms": 120000, "maximum_ms": 120000})
    );

    assert_eq!(
        d["status_breakdown"],
        json!([
            {"status": "completed", "count": 1, "share_percent": 17},
            {"status": "in_progress", "count": 1, "share_percent": 17},
            {"status": "ready", "count": 1, "share_percent": 17},
            {"status": "blocked", "count": 2, "share_percent": 33},
            {"status": "failed", "count": 1, "share_percent": 17},
        ])
    );

    let q = &d["queue"];
    assert_eq!(q["total"], 1);
    let depth = q["depth"].as_array().unwrap();
    assert_eq!(depth.len(), 1);
    assert_eq!(depth[0]["count"], 1);
    assert_eq!(depth[0]["oldest_queue_age_ms"], 180000);
    assert_absent(&depth[0], "network_channel");
    assert_eq!(q["oldest_queue_age_ms"], 180000);
    assert_eq!(q["backlog_warning"], false);
    assert_eq!(q["backlog_status"], "ok");
    assert_eq!(q["backlog_threshold_ms"], 600000);

    assert_eq!(
        d["health"],
        json!({"status": "ok", "stuck_runs": 0, "active_orphan_runs": 0, "queue_backlog": false})
    );

    let a = &d["active_runs"];
    assert_eq!(a["total"], 2);
    assert_eq!(a["running"], 1);
    assert_eq!(a["queued"], 1);
    let items = a["items"].as_array().unwrap();
    let run_ids: Vec<String> = items.iter().map(|i| str_of(i, "run_id")).collect();
    assert_eq!(run_ids, vec![running_run.clone(), queued_run.clone()]);
    assert_eq!(items[0]["age_ms"], 300000);
    assert_eq!(items[1]["age_ms"], 180000);
    assert_eq!(items[0]["task_id"], working.as_str());
    assert_eq!(items[0]["task_status"], "in_progress");
    assert_eq!(items[0]["task_owner"], owner("human", "alice"));
    assert_eq!(items[0]["session_id"], "sess-live");
    assert_eq!(items[0]["stuck"], false);
    assert_eq!(items[0]["health_status"], "ok");
    assert_eq!(items[1]["task_priority"], "urgent");
    assert!(items[0]["latest_event_seq"].as_i64().unwrap() > 0);

    let f = &d["freshness"];
    assert_eq!(f["status"], "current");
    assert_eq!(f["age_ms"], 60000);
    assert_eq!(f["stale"], false);
    assert_eq!(f["has_live_work"], true);
    assert_eq!(f["stale_after_ms"], 120000);

    assert_eq!(d["cards"]["blocked"]["health_status"], "warn");
    assert_eq!(d["cards"]["blocked"]["awaiting_approval"], 1);
    assert_eq!(d["cards"]["blocked"]["awaiting_dependencies"], 2);
    assert_eq!(d["cards"]["failed"]["health_status"], "warn");
    assert_eq!(d["cards"]["failed"]["tasks"], 1);
    assert_eq!(d["cards"]["failed"]["failed_runs"], 1);
    assert_eq!(d["cards"]["failed"]["forced_stops"], 0);
    assert_eq!(d["cards"]["in_progress"]["health_status"], "ok");
    assert_eq!(d["cards"]["in_progress"]["tasks"], 1);
}

/// One run queued 20 minutes ago and nothing else.
#[tokio::test]
async fn old_queue_is_a_backlog_and_stale() {
    let srv = clock_server();
    let t = srv.task("waiting").await;
    srv.enqueue(&t).await;
    minutes(&srv, 20.0).await;
    let d = dashboard(&srv, "").await;
    assert_eq!(d["queue"]["backlog_warning"], true, "{d}");
    assert_eq!(d["queue"]["backlog_status"], "warn");
    assert_eq!(d["freshness"]["status"], "stale");
    assert_eq!(d["freshness"]["stale"], true);
    assert_eq!(d["health"]["status"], "warn");
    assert_eq!(d["health"]["queue_backlog"], true);
}

#[tokio::test]
async fn empty_database() {
    let srv = Server::start();
    let d = dashboard(&srv, "").await;
    assert_eq!(d["totals"]["tasks_total"], 0);
    assert_eq!(d["queue"]["total"], 0);
    assert_eq!(d["queue"]["oldest_queued_at"], "0001-01-01T00:00:00Z");
    assert_eq!(d["freshness"]["status"], "empty");
    assert_eq!(d["freshness"]["latest_activity_at"], "0001-01-01T00:00:00Z");
    assert_eq!(d["freshness"]["stale"], false);
    assert_absent(&d["active_runs"], "items");
    assert_absent(&d, "status_breakdown");
    assert_absent(&d["queue"], "depth");
    assert_eq!(d["health"]["status"], "ok");
}

/// Backlog warns at exactly the threshold (`>=`); staleness needs strictly more (`>`).
#[tokio::test]
async fn backlog_and_stale_thresholds_on_the_clock() {
    let srv = clock_server();
    let t = srv.task("queued").await;
    srv.enqueue(&t).await;
    advance(&srv, 120.0).await;
    let d = dashboard(&srv, "").await;
    assert_eq!(d["freshness"]["age_ms"], 120000);
    assert_eq!(
        d["freshness"]["status"], "current",
        "not stale at exactly 2 min"
    );
    advance(&srv, 0.001).await;
    assert_eq!(dashboard(&srv, "").await["freshness"]["status"], "stale");
    advance(&srv, 600.0 - 120.001 - 0.001).await;
    let d = dashboard(&srv, "").await;
    assert_eq!(d["queue"]["oldest_queue_age_ms"], 599999);
    assert_eq!(d["queue"]["backlog_warning"], false);
    advance(&srv, 0.001).await;
    let d = dashboard(&srv, "").await;
    assert_eq!(d["queue"]["oldest_queue_age_ms"], 600000);
    assert_eq!(
        d["queue"]["backlog_warning"], true,
        "warns at exactly 10 min"
    );

    // A quiet system with no live work is never stale.
    let srv = clock_server();
    srv.task("idle").await;
    minutes(&srv, 60.0).await;
    let d = dashboard(&srv, "").await;
    assert_eq!(d["freshness"]["status"], "current");
    assert_eq!(d["freshness"]["has_live_work"], false);
}

/// Claimed/starting runs are stuck after 5 min, running ones after 30 min (`>=`).
#[tokio::test]
async fn stuck_runs_follow_the_clock() {
    let srv = clock_server();
    let a = srv.task("claimed").await;
    let claimed = id(&srv.enqueue(&a).await);
    srv.claim(&claimed).await;
    let b = srv.task("running").await;
    let running = id(&srv.enqueue(&b).await);
    srv.claim(&running).await;
    post_ok(
        &srv,
        &format!("/api/task-runs/{running}/attach-session"),
        json!({"session_id": "s-1"}),
    )
    .await;
    srv.start_run(&running).await;

    advance(&srv, 299.999).await;
    let d = dashboard(&srv, "").await;
    assert_eq!(d["health"]["stuck_runs"], 0, "{d}");
    advance(&srv, 0.001).await;
    let d = dashboard(&srv, "").await;
    assert_eq!(d["health"]["stuck_runs"], 1);
    assert_eq!(d["health"]["status"], "warn");
    let items = d["active_runs"]["items"].as_array().unwrap();
    let stuck: Vec<(String, bool)> = items
        .iter()
        .map(|i| (str_of(i, "run_id"), i["stuck"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        stuck,
        vec![(running.clone(), false), (claimed.clone(), true)]
    );
    assert_eq!(items[1]["health_status"], "warn");
    assert_eq!(items[1]["age_ms"], 300000);

    advance(&srv, 25.0 * 60.0).await; // running for exactly 30 min
    let d = dashboard(&srv, "").await;
    assert_eq!(d["health"]["stuck_runs"], 2);
    assert_eq!(d["active_runs"]["items"][0]["stuck"], true);
    assert_eq!(
        d["health"]["active_orphan_runs"], 0,
        "session-bound runs are not orphans"
    );
}

/// A starting/running run with neither a session nor a lease is an orphan.
#[tokio::test]
async fn running_run_without_session_or_lease_is_an_orphan() {
    let srv = clock_server();
    let t = srv.task("sessionless").await;
    srv.running_run(&t).await;
    let d = dashboard(&srv, "").await;
    assert_eq!(d["health"]["active_orphan_runs"], 1, "{d}");
    assert_eq!(d["health"]["status"], "warn");
    assert_eq!(d["cards"]["in_progress"]["health_status"], "warn");
}

#[tokio::test]
async fn filters_apply_to_tasks_and_runs() {
    let srv = Server::start();
    let ws = srv
        .create_task(
            json!({"scope": "workspace", "workspace": "ws-a", "title": "in ws",
                            "network_channel": "builds", "owner": owner("human", "bob")}),
        )
        .await;
    let ws_id = id(&ws);
    srv.enqueue(&ws_id).await;
    let g = srv.task("global one").await;
    srv.complete_task(&g).await;

    let d = dashboard(&srv, "?scope=workspace&workspace=ws-a").await;
    assert_eq!(d["totals"]["tasks_total"], 1, "{d}");
    assert_eq!(d["totals"]["runs_total"], 1);
    assert_eq!(d["totals"]["queued_runs"], 1);
    let d = dashboard(&srv, "?scope=global").await;
    assert_eq!(d["totals"]["tasks_total"], 1);
    assert_eq!(d["totals"]["completed_runs"], 1);
    assert_eq!(d["totals"]["queued_runs"], 0);
    assert_eq!(d["queue"]["total"], 0);
    let d = dashboard(&srv, "?owner_kind=human&owner_ref=bob").await;
    assert_eq!(d["totals"]["tasks_total"], 1);
    let d = dashboard(&srv, "?owner_ref=nobody").await;
    assert_eq!(d["totals"]["tasks_total"], 0);
    assert_eq!(d["freshness"]["status"], "empty");
    let d = dashboard(&srv, "?origin_kind=http").await;
    assert_eq!(d["totals"]["tasks_total"], 2);
    assert_eq!(d["totals"]["runs_total"], 2);
    let d = dashboard(&srv, "?origin_kind=cli").await;
    assert_eq!(d["totals"]["tasks_total"], 0);

    // The run's own channel must match too: the workspace task's run carries the task channel.
    let d = dashboard(&srv, "?network_channel=builds").await;
    assert_eq!(d["totals"]["tasks_total"], 1);
    assert_eq!(d["queue"]["total"], 1);
    let depth = &d["queue"]["depth"][0];
    assert_eq!(depth["network_channel"], "builds", "{d}");
    let d = dashboard(&srv, "?network_channel=other").await;
    assert_eq!(d["totals"]["tasks_total"], 0);
    assert_eq!(d["totals"]["runs_total"], 0);
}

/// Counters stay exact through PATCHes that move a task between filter classes and deletes.
#[tokio::test]
async fn counters_follow_updates_and_deletes() {
    let srv = Server::start();
    let t = srv.task("moving").await;
    srv.complete_task(&t).await;
    let other = srv.task("stays").await;
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{other}"),
            json!({"owner": owner("human", "carol")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = dashboard(&srv, "?owner_ref=carol").await;
    assert_eq!(d["totals"]["tasks_total"], 1, "{d}");
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{t}"),
            json!({"owner": owner("human", "carol")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = dashboard(&srv, "?owner_ref=carol").await;
    assert_eq!(d["totals"]["tasks_total"], 2);
    assert_eq!(d["totals"]["runs_total"], 1, "runs move with their task");
    assert_eq!(d["cards"]["latency"]["claim_latency_ms"]["samples"], 1);

    let (s, v) = srv.delete(&format!("/api/tasks/{t}")).await;
    assert!(s.is_success(), "delete: {v}");
    let d = dashboard(&srv, "").await;
    assert_eq!(d["totals"]["tasks_total"], 1);
    assert_eq!(d["totals"]["runs_total"], 0);
    assert_eq!(d["totals"]["completed_tasks"], 0);
    assert_eq!(d["cards"]["latency"]["claim_latency_ms"]["samples"], 0);
    let d = dashboard(&srv, "?owner_ref=carol").await;
    assert_eq!(d["totals"]["tasks_total"], 1);
    assert_eq!(d["totals"]["runs_total"], 0);
}

#[tokio::test]
async fn bad_filters_are_422() {
    let srv = Server::start();
    for q in [
        "?scope=bogus",
        "?workspace=ws-a",
        "?scope=global&workspace=ws-a",
        "?scope=workspace",
        "?owner_kind=robot",
        "?network_channel=NOT%20OK",
        "?origin_kind=carrier",
    ] {
        let r = srv.get(&format!("/api/observe/tasks/dashboard{q}")).await;
        assert_err(&r, 422, "validation_failed");
    }
}
