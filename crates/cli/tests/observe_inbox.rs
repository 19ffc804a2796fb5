//! `GET /api/observe/tasks/inbox` and `POST /api/tasks/{id}/triage/*`: lanes, effective triage,
//! ordering, per-lane limits, and the reference's worked examples.
//! Over plain HTTP the caller is human/local-user; the reference's "alice" is that caller here.

mod common;
mod observe_support;

use common::*;
use observe_support::*;

fn me() -> Value {
    owner("human", "local-user")
}

/// Built over HTTP on the test clock.
#[tokio::test]
async fn worked_example_assigns_lanes_and_supports_filters() {
    let srv = clock_server();
    let blocker = srv.task("blocker (nobody's, ready)").await;

    // dismissed-hidden: updated at -25m, dismissed at -5m.
    let hidden = id(&srv
        .task_with("dismissed-hidden", json!({"owner": me()}))
        .await);
    minutes(&srv, 5.0).await; // -25
    let resurfaced = id(&srv
        .task_with("resurfaced", json!({"owner": me(), "priority": "urgent"}))
        .await);
    minutes(&srv, 0.0).await;
    triage(&srv, &resurfaced, "dismiss").await; // last_seen -25 (its creation)
    let approval = id(&srv
        .task_with("approval", json!({"approval_policy": "manual"}))
        .await);
    let failed = id(&srv.task_with("failed", json!({"max_attempts": 2})).await);
    srv.fail_task_once(&failed, "first").await;
    let failed_run = srv.fail_task_once(&failed, "second").await;
    let blocked = srv.task("blocked").await;
    srv.add_dep(&blocked, &blocker).await;
    let archived = id(&srv.task_with("archived", json!({"owner": me()})).await);
    triage(&srv, &archived, "archive").await;
    minutes(&srv, 20.0).await; // -5
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{resurfaced}"),
            json!({"description": "new activity"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    triage(&srv, &hidden, "dismiss").await;
    let read = id(&srv.task_with("my-work-read", json!({"owner": me()})).await);
    triage(&srv, &read, "read").await;
    minutes(&srv, 5.0).await; // now

    let ib = inbox(&srv, "").await;
    assert_eq!(ib["total"], 6, "{ib}");
    assert_eq!(ib["unread_total"], 4);
    assert_eq!(ib["archived_total"], 1);
    let lanes: Vec<&str> = ib["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["lane"].as_str().unwrap())
        .collect();
    assert_eq!(
        lanes,
        ["my_work", "approvals", "failed_runs", "blocked", "archived"]
    );

    let mw = group(&ib, "my_work");
    assert_eq!(mw["count"], 2);
    assert_eq!(mw["unread_count"], 1);
    assert_eq!(item_ids(mw), vec![resurfaced.clone(), read.clone()]);
    let t = &mw["items"][0]["triage"];
    assert_eq!(
        t["dismissed"], false,
        "resurfaced item is un-dismissed: {t}"
    );
    assert_eq!(t["read"], false);
    assert_eq!(mw["items"][1]["triage"]["read"], true);

    let ap = group(&ib, "approvals");
    assert_eq!(ap["count"], 1);
    assert_eq!(item_ids(ap), vec![approval.clone()]);
    assert_eq!(ap["items"][0]["blocking_reason"], "awaiting_approval");
    assert_eq!(ap["items"][0]["approval_policy"], "manual");
    assert_eq!(ap["items"][0]["approval_state"], "pending");
    assert_absent(&ap["items"][0], "run");
    assert_eq!(
        ap["items"][0]["triage"]["updated_at"],
        "0001-01-01T00:00:00Z"
    );
    assert_absent(&ap["items"][0]["triage"], "last_seen_activity_at");

    let fr = group(&ib, "failed_runs");
    assert_eq!(fr["count"], 1);
    let item = &fr["items"][0];
    assert_eq!(item["blocking_reason"], "latest_run_failed");
    assert_eq!(item["run"]["id"], failed_run.as_str());
    assert_eq!(item["run"]["attempt"], 2);
    assert_eq!(item["run"]["status"], "failed");
    assert_eq!(item["run"]["max_attempts"], 2);
    assert_eq!(item["run"]["error"], "second");
    assert_absent(&item["run"], "claim_token_hash");

    let bl = group(&ib, "blocked");
    assert_eq!(item_ids(bl), vec![blocked.clone()]);
    assert_eq!(bl["items"][0]["blocking_reason"], "awaiting_dependencies");

    let ar = group(&ib, "archived");
    assert_eq!(ar["count"], 1);
    assert_eq!(ar["unread_count"], 0);
    assert_eq!(item_ids(ar), vec![archived.clone()]);

    let only = inbox(&srv, "?lane=approvals").await;
    assert_eq!(only["total"], 1);
    assert_eq!(only["groups"].as_array().unwrap().len(), 1);
    assert_eq!(only["groups"][0]["lane"], "approvals");

    let unread = inbox(&srv, "?unread=true").await;
    assert_eq!(unread["total"], 4);
    assert_eq!(unread["archived_total"], 0);
    assert_eq!(group(&unread, "my_work")["count"], 1);

    let q = inbox(&srv, "?query=RESURFACED").await;
    assert_eq!(q["total"], 1);
    assert_eq!(item_ids(group(&q, "my_work")), vec![resurfaced.clone()]);
}

/// Approval and triage transitions.
#[tokio::test]
async fn worked_example_approval_and_triage_transitions() {
    let srv = clock_server();
    let plain = id(&srv.task_with("plain", json!({"owner": me()})).await);
    let approve_me = id(&srv
        .task_with(
            "to approve",
            json!({"owner": me(), "approval_policy": "manual"}),
        )
        .await);
    let reject_me = id(&srv
        .task_with(
            "to reject",
            json!({"owner": me(), "approval_policy": "manual"}),
        )
        .await);
    let to_archive = id(&srv.task_with("to archive", json!({"owner": me()})).await);
    let failing = id(&srv
        .task_with("failing", json!({"owner": me(), "max_attempts": 1}))
        .await);
    srv.fail_task_once(&failing, "nope").await;

    let ib = inbox(&srv, "").await;
    assert_eq!(ib["total"], 5, "{ib}");
    assert_eq!(group(&ib, "approvals")["count"], 2);
    assert_eq!(group(&ib, "my_work")["count"], 2);
    assert_eq!(group(&ib, "failed_runs")["count"], 1);

    advance(&srv, 1.0).await;
    triage(&srv, &plain, "read").await;
    triage(&srv, &to_archive, "archive").await;
    triage(&srv, &failing, "dismiss").await;
    advance(&srv, 1.0).await;
    post_ok(&srv, &format!("/api/tasks/{approve_me}/approve"), json!({})).await;
    post_ok(&srv, &format!("/api/tasks/{reject_me}/reject"), json!({})).await;

    let ib = inbox(&srv, "").await;
    assert_eq!(ib["total"], 4, "{ib}");
    assert_eq!(ib["unread_total"], 2);
    assert_eq!(ib["archived_total"], 1);
    assert_eq!(group(&ib, "approvals")["count"], 0);
    assert_absent(group(&ib, "approvals"), "items");
    assert_eq!(group(&ib, "failed_runs")["count"], 0);
    let bl = group(&ib, "blocked");
    assert_eq!(item_ids(bl), vec![reject_me.clone()]);
    assert_eq!(bl["items"][0]["blocking_reason"], "approval_rejected");
    let mw = group(&ib, "my_work");
    assert_eq!(item_ids(mw), vec![approve_me.clone(), plain.clone()]);
    assert_eq!(mw["items"][0]["triage"]["read"], false);
    assert_eq!(mw["items"][1]["triage"]["read"], true);

    let unread = inbox(&srv, "?unread=true").await;
    assert_eq!(unread["total"], 2);
    assert_eq!(group(&unread, "my_work")["count"], 1);
    assert_eq!(group(&unread, "blocked")["count"], 1);
    let approvals = inbox(&srv, "?lane=approvals").await;
    assert_eq!(approvals["total"], 0);
}

#[tokio::test]
async fn triage_is_per_caller_records_no_event_and_archive_sticks() {
    let srv = clock_server();
    let t = id(&srv.task_with("shared", json!({"owner": me()})).await);
    let seq = srv.latest_seq(&t).await;
    let timeline_len = srv.timeline(&t, "").await.len();

    let r = triage(&srv, &t, "read").await;
    assert_eq!(r["task_id"], t.as_str());
    assert_eq!(r["actor"], me());
    assert_eq!(r["read"], true);
    assert_eq!(r["dismissed"], false);
    assert_eq!(r["archived"], false);
    assert!(is_micros_utc(&str_of(&r, "updated_at")), "{r}");
    assert!(is_micros_utc(&str_of(&r, "last_seen_activity_at")), "{r}");
    let d = triage(&srv, &t, "dismiss").await;
    assert_eq!(
        (d["read"].clone(), d["dismissed"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(srv.latest_seq(&t).await, seq, "triage records no event");
    assert_eq!(srv.timeline(&t, "").await.len(), timeline_len);

    // Dismissed for me, but another caller (an agent session) has its own state.
    assert_eq!(inbox(&srv, "").await["total"], 0);
    let agent_view = inbox_as(&srv, "?lane=my_work", &agent("sess-9")).await;
    assert_eq!(agent_view["total"], 0, "not the agent's task: {agent_view}");
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/tasks/{t}/triage/archive"),
            None,
            &agent("sess-9"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["triage"]["actor"],
        json!({"kind": "agent_session", "ref": "sess-9"})
    );
    assert_eq!(
        inbox_as(&srv, "", &agent("sess-9")).await["archived_total"],
        1
    );
    assert_eq!(inbox(&srv, "").await["archived_total"], 0);

    // New activity resurfaces a dismissed item...
    advance(&srv, 1.0).await;
    let (s, _) = srv
        .patch(
            &format!("/api/tasks/{t}"),
            json!({"title": "shared, renamed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let ib = inbox(&srv, "").await;
    assert_eq!(item_ids(group(&ib, "my_work")), vec![t.clone()]);
    assert_eq!(group(&ib, "my_work")["unread_count"], 1);
    // ...but archived stays archived and read, whatever happens next.
    triage(&srv, &t, "archive").await;
    advance(&srv, 1.0).await;
    srv.enqueue(&t).await;
    triage(&srv, &t, "dismiss").await;
    let ib = inbox(&srv, "").await;
    assert_eq!(item_ids(group(&ib, "archived")), vec![t.clone()]);
    assert_eq!(ib["unread_total"], 0);
    let stored = triage(&srv, &t, "read").await;
    assert_eq!(stored["archived"], true, "there is no un-archive");
}

#[tokio::test]
async fn ordering_and_per_lane_limit() {
    let srv = clock_server();
    let mut ids = Vec::new();
    for (i, prio) in ["low", "high", "medium", "urgent"].iter().enumerate() {
        let t = id(&srv
            .task_with(&format!("t{i}"), json!({"owner": me(), "priority": prio}))
            .await);
        ids.push(t);
    }
    // Same activity instant for all but the last one, which is newest.
    advance(&srv, 1.0).await;
    let newest = id(&srv.task_with("newest", json!({"owner": me()})).await);
    triage(&srv, &newest, "read").await;
    let ib = inbox(&srv, "").await;
    // unread first; among equal activity: priority high to low.
    let expected = vec![
        ids[3].clone(),
        ids[1].clone(),
        ids[2].clone(),
        ids[0].clone(),
        newest.clone(),
    ];
    assert_eq!(item_ids(group(&ib, "my_work")), expected);
    let limited = inbox(&srv, "?limit=2").await;
    let mw = group(&limited, "my_work");
    assert_eq!(mw["count"], 5, "counts are computed before the limit");
    assert_eq!(mw["unread_count"], 4);
    assert_eq!(item_ids(mw), expected[..2].to_vec());
    assert_eq!(limited["total"], 5);
}

#[tokio::test]
async fn claimed_runs_make_work_mine_and_others_tasks_stay_out() {
    let srv = Server::start();
    let theirs = id(&srv
        .task_with("theirs", json!({"owner": owner("human", "zoe")}))
        .await);
    let completed_mine = id(&srv.task_with("done", json!({"owner": me()})).await);
    srv.complete_task(&completed_mine).await;
    let draft = id(&srv
        .task_with("draft", json!({"owner": me(), "draft": true}))
        .await);
    let ib = inbox(&srv, "").await;
    assert_eq!(ib["total"], 0, "{ib}");
    // An open run claimed by the caller puts somebody else's task in my_work.
    let run = id(&srv.enqueue(&theirs).await);
    srv.claim(&run).await;
    let ib = inbox(&srv, "").await;
    assert_eq!(
        item_ids(group(&ib, "my_work")),
        vec![theirs.clone()],
        "{ib}"
    );
    // Drafts appear only when archived.
    triage(&srv, &draft, "archive").await;
    let ib = inbox(&srv, "?lane=archived").await;
    assert_eq!(item_ids(group(&ib, "archived")), vec![draft.clone()]);
}

#[tokio::test]
async fn inbox_and_triage_validation() {
    let srv = Server::start();
    for q in [
        "?lane=bogus",
        "?unread=maybe",
        "?limit=-1",
        "?limit=ten",
        "?workspace=w",
    ] {
        let r = srv.get(&format!("/api/observe/tasks/inbox{q}")).await;
        assert_err(&r, 422, "validation_failed");
    }
    for action in ["read", "dismiss", "archive"] {
        let r = srv
            .post_empty(&format!("/api/tasks/task-missing/triage/{action}"))
            .await;
        assert_err(&r, 404, "task_not_found");
    }
}
