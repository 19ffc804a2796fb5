//! The inbox without `query` is computed from counters, the caller's corrections (triage rows,
//! claimed runs) and per-lane indexes; with `query` it evaluates every candidate task. Both must
//! give the same answer: every title here contains "item", so `query=item` is the full scan of
//! the same task set. Also: the triage corrections (dismissed resurfacing on new activity, archived
//! staying archived, unread counts after read), per-lane limits with ties, filters and deletes.

mod common;
mod observe_support;

use common::*;
use observe_support::*;

fn me() -> Value {
    owner("human", "local-user")
}

/// The indexed answer equals the scanned one, for every shape of request.
async fn assert_matches_scan(srv: &Server) {
    for q in [
        "",
        "?limit=1",
        "?limit=2",
        "?unread=true",
        "?unread=true&limit=1",
        "?lane=blocked&limit=2",
        "?lane=archived",
        "?lane=my_work&limit=1",
        "?scope=workspace&workspace=ws-a",
        "?owner_kind=human&owner_ref=local-user&limit=2",
    ] {
        let indexed = inbox(srv, q).await;
        let sep = if q.is_empty() { "?" } else { "&" };
        let scanned = inbox(srv, &format!("{q}{sep}query=item")).await;
        assert_eq!(indexed, scanned, "inbox{q}: indexed vs scan");
    }
}

fn counts(ib: &Value, lane: &str) -> (i64, i64) {
    let g = group(ib, lane);
    (
        g["count"].as_i64().unwrap(),
        g["unread_count"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn triage_corrections_match_the_full_scan() {
    let srv = clock_server();
    let blocker = srv.task("item blocker").await;
    // Five blocked tasks at one instant (a tie on activity), one of them in a workspace.
    let mut blocked = Vec::new();
    for i in 0..5 {
        let extra = if i == 4 {
            json!({"scope": "workspace", "workspace": "ws-a", "priority": "high"})
        } else {
            let priority = ["low", "medium", "urgent", "low"][i];
            json!({ "priority": priority })
        };
        blocked.push(id(&srv
            .task_with(&format!("item blocked {i}"), extra)
            .await));
    }
    for b in &blocked {
        srv.add_dep(b, &blocker).await;
    }
    advance(&srv, 1.0).await;
    let mut approvals = Vec::new();
    for i in 0..2 {
        approvals.push(id(&srv
            .task_with(
                &format!("item approval {i}"),
                json!({"approval_policy": "manual"}),
            )
            .await));
    }
    let mut failed = Vec::new();
    for i in 0..3 {
        let t = id(&srv
            .task_with(&format!("item failed {i}"), json!({"max_attempts": 1}))
            .await);
        srv.fail_task_once(&t, "boom").await;
        failed.push(t);
    }
    let mut mine = Vec::new();
    for i in 0..3 {
        mine.push(id(&srv
            .task_with(&format!("item mine {i}"), json!({"owner": me()}))
            .await));
    }
    // Somebody else's task with a run the caller claimed is the caller's work too.
    let claimed = id(&srv
        .task_with("item claimed", json!({"owner": owner("human", "zoe")}))
        .await);
    let run = id(&srv.enqueue(&claimed).await);
    srv.claim(&run).await;
    // Somebody else's ready task and the caller's completed one are in no lane.
    srv.task_with("item theirs", json!({"owner": owner("human", "zoe")}))
        .await;
    let done = id(&srv.task_with("item done", json!({"owner": me()})).await);
    srv.complete_task(&done).await;

    let ib = inbox(&srv, "").await;
    assert_eq!(counts(&ib, "my_work"), (4, 4), "{ib}");
    assert_eq!(counts(&ib, "approvals"), (2, 2));
    assert_eq!(counts(&ib, "failed_runs"), (3, 3));
    assert_eq!(counts(&ib, "blocked"), (5, 5));
    assert_eq!(counts(&ib, "archived"), (0, 0));
    assert_eq!(ib["total"], 14);
    assert_matches_scan(&srv).await;
    // The tie on activity is ordered by priority, then id.
    let limited = inbox(&srv, "?lane=blocked&limit=2").await;
    assert_eq!(
        item_ids(group(&limited, "blocked")),
        vec![blocked[2].clone(), blocked[4].clone()]
    );

    // Read, dismiss and archive one of each kind.
    advance(&srv, 1.0).await;
    triage(&srv, &blocked[1], "read").await;
    triage(&srv, &blocked[2], "dismiss").await;
    triage(&srv, &failed[0], "archive").await;
    triage(&srv, &mine[0], "read").await;
    triage(&srv, &approvals[0], "dismiss").await;
    triage(&srv, &claimed, "read").await;
    triage(&srv, &done, "read").await; // in no lane: changes nothing
    let ib = inbox(&srv, "").await;
    assert_eq!(counts(&ib, "my_work"), (4, 2), "unread after read: {ib}");
    assert_eq!(counts(&ib, "approvals"), (1, 1), "dismissed is hidden");
    assert_eq!(counts(&ib, "failed_runs"), (2, 2));
    assert_eq!(counts(&ib, "blocked"), (4, 3));
    assert_eq!(counts(&ib, "archived"), (1, 0));
    assert_eq!(ib["total"], 12);
    assert_eq!(ib["unread_total"], 8);
    assert_eq!(ib["archived_total"], 1);
    // Read items come after every unread one, whatever their activity.
    let bl = group(&ib, "blocked");
    assert_eq!(item_ids(bl).last(), Some(&blocked[1]));
    assert_eq!(
        item_ids(group(
            &inbox(&srv, "?lane=blocked&limit=1").await,
            "blocked"
        )),
        vec![blocked[4].clone()],
        "the dismissed urgent task is skipped by the page"
    );
    let unread = inbox(&srv, "?unread=true").await;
    assert_eq!(unread["total"], 8);
    assert_eq!(unread["archived_total"], 0);
    assert_matches_scan(&srv).await;

    // New activity: the dismissed task resurfaces unread, the read one is unread again, the
    // archived one stays archived and read.
    advance(&srv, 60.0).await;
    for t in [&blocked[2], &blocked[1], &failed[0], &mine[0]] {
        let (s, v) = srv
            .patch(&format!("/api/tasks/{t}"), json!({"description": "news"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let ib = inbox(&srv, "").await;
    assert_eq!(counts(&ib, "blocked"), (5, 5), "resurfaced: {ib}");
    assert_eq!(counts(&ib, "my_work"), (4, 3));
    assert_eq!(counts(&ib, "archived"), (1, 0), "archived stays archived");
    assert_eq!(counts(&ib, "failed_runs"), (2, 2));
    let bl = group(&ib, "blocked");
    // The newest activity first among unread items.
    assert_eq!(item_ids(bl)[..2], [blocked[2].clone(), blocked[1].clone()]);
    assert_eq!(bl["items"][0]["triage"]["dismissed"], false);
    assert_eq!(bl["items"][0]["triage"]["read"], false);
    assert_eq!(
        group(&ib, "archived")["items"][0]["triage"]["read"],
        true,
        "{ib}"
    );
    assert_matches_scan(&srv).await;

    // Reading again clears unread; state changes move tasks between lanes.
    triage(&srv, &blocked[2], "read").await;
    post_ok(
        &srv,
        &format!("/api/tasks/{}/approve", approvals[1]),
        json!({}),
    )
    .await;
    let ib = inbox(&srv, "").await;
    assert_eq!(counts(&ib, "blocked"), (5, 4));
    assert_eq!(counts(&ib, "approvals"), (0, 0));
    assert_matches_scan(&srv).await;

    // The claimed run ends: the task leaves my_work; its triage row stays harmless.
    srv.cancel_run(&run).await;
    let ib = inbox(&srv, "").await;
    assert_eq!(counts(&ib, "my_work"), (3, 3), "{ib}");
    assert_matches_scan(&srv).await;

    // Deleting a task with a triage row takes its row and its counts with it.
    let (s, v) = srv.delete(&format!("/api/tasks/{}", mine[0])).await;
    assert!(s.is_success(), "{v}");
    let ib = inbox(&srv, "").await;
    assert_eq!(counts(&ib, "my_work"), (2, 2), "{ib}");
    assert_matches_scan(&srv).await;
    // A task with a (failed) run, deleted: its run goes with it (cascade).
    let (s, v) = srv.delete(&format!("/api/tasks/{}", failed[1])).await;
    assert!(s.is_success(), "{v}");
    assert_eq!(counts(&inbox(&srv, "").await, "failed_runs"), (1, 1));
    assert_matches_scan(&srv).await;
    // The blocker completes: the dependents are no longer blocked, and nobody's work.
    srv.complete_task(&blocker).await;
    let ib = inbox(&srv, "").await;
    assert_eq!(counts(&ib, "blocked"), (0, 0), "{ib}");
    assert_matches_scan(&srv).await;
}

#[tokio::test]
async fn a_daemon_owns_nothing_and_an_agent_sees_its_claims() {
    let srv = clock_server();
    let t = id(&srv.task_with("item agent work", json!({})).await);
    let run = id(&srv.enqueue(&t).await);
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/task-runs/{run}/claim"),
            Some(json!({"idempotency_key": "claim-1"})),
            &agent("sess-1"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "claim as agent: {v}");
    let as_agent = inbox_as(&srv, "", &agent("sess-1")).await;
    assert_eq!(
        item_ids(group(&as_agent, "my_work")),
        vec![t.clone()],
        "{as_agent}"
    );
    let scanned = inbox_as(&srv, "?query=item", &agent("sess-1")).await;
    assert_eq!(as_agent, scanned);
    assert_eq!(inbox(&srv, "").await["total"], 0);
}
