//! Task actions: publish, approve, reject, start, cancel (tree), children, tree view.
mod common;
use common::*;

// ---------------------------------------------------------------- publish

#[tokio::test(flavor = "multi_thread")]
async fn publish_draft_makes_it_ready_and_enqueues_one_run() {
    let srv = Server::start();
    let tid = id(&srv.task_with("draft", json!({"draft": true})).await);
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{tid}/publish"),
            json!({"metadata": {"why": "go"}, "network_channel": "pub-1"}),
        )
        .await;
    assert_status(&(s, v.clone()), 200);
    assert_eq!(v["task"]["status"], "ready");
    assert!(v["task"].get("draft").is_none() || v["task"]["draft"] == false);
    let run = &v["run"];
    assert_eq!(run["status"], "queued");
    assert_eq!(run["attempt"], 1);
    assert_eq!(run["task_id"], tid.as_str());
    assert_eq!(run["origin"], http_origin("publish"));
    assert_eq!(run["metadata"], json!({"why": "go"}));
    assert_eq!(run["network_channel"], "pub-1");
    let runs = srv.runs(&tid, "").await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        srv.list_ids("").await,
        vec![tid.clone()],
        "published task is listed"
    );

    // Publishing again: not a draft any more.
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/publish")).await,
        409,
        "invalid_transition",
    );
    assert_eq!(srv.runs(&tid, "").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_refusals_leave_the_draft_untouched() {
    let srv = Server::start();
    assert_err(
        &srv.post_empty("/api/tasks/task-missing/publish").await,
        404,
        "task_not_found",
    );
    let ready = srv.task("ready").await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{ready}/publish")).await,
        409,
        "invalid_transition",
    );

    // A manual-approval draft would be blocked once published: 409.
    let manual = id(&srv
        .task_with(
            "manual draft",
            json!({"draft": true, "approval_policy": "manual"}),
        )
        .await);
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{manual}/publish"))
            .await,
        409,
        "invalid_transition",
    );
    let t = srv.get_task(&manual).await;
    assert_eq!(t["status"], "draft");
    assert!(srv.runs(&manual, "").await.is_empty());
    assert_eq!(
        srv.events(&manual).await.len(),
        1,
        "a refused publish records nothing"
    );

    // A draft with an unresolved dependency would be blocked too.
    let blocker = srv.task("blocker").await;
    let dep = id(&srv.task_with("dep draft", json!({"draft": true})).await);
    srv.add_dep(&dep, &blocker).await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{dep}/publish")).await,
        409,
        "invalid_transition",
    );
    assert_eq!(srv.status_of(&dep).await, "draft");
    // Once the blocker completes, publish works.
    srv.complete_task(&blocker).await;
    let (s, v) = srv.post_empty(&format!("/api/tasks/{dep}/publish")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["task"]["status"], "ready");
}

// ---------------------------------------------------------------- approve / reject

#[tokio::test(flavor = "multi_thread")]
async fn approve_records_approval_and_enqueues() {
    let srv = Server::start();
    let tid = id(&srv
        .task_with("gated", json!({"approval_policy": "manual"}))
        .await);
    assert_eq!(srv.status_of(&tid).await, "blocked");
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{tid}/approve"),
            json!({"metadata": {"by": "boss"}}),
        )
        .await;
    assert_status(&(s, v.clone()), 201);
    assert_eq!(v["task"]["approval_state"], "approved");
    assert_eq!(v["task"]["status"], "ready");
    assert_eq!(v["run"]["status"], "queued");
    assert_eq!(v["run"]["origin"], http_origin("approve"));
    assert_eq!(v["run"]["metadata"], json!({"by": "boss"}));
    // The run is claimable now.
    srv.claim(&id(&v["run"])).await;

    // Approve again: not pending any more.
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/approve")).await,
        409,
        "invalid_transition",
    );
    // Approve a task without manual approval.
    let plain = srv.task("plain").await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{plain}/approve")).await,
        409,
        "invalid_transition",
    );
    assert!(srv.runs(&plain, "").await.is_empty());
    assert_err(
        &srv.post_empty("/api/tasks/task-missing/approve").await,
        404,
        "task_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn approving_a_manual_draft_grants_the_approval_and_enqueues_on_publish() {
    // Tasklane's decision (README, Compatibility): approving a manual-approval draft records the
    // approval and enqueues nothing (no `run` in the answer); publishing then enqueues the first
    // run. Refusing instead would leave such a draft impossible to publish.
    let srv = Server::start();
    let draft = id(&srv
        .task_with(
            "manual draft",
            json!({"draft": true, "approval_policy": "manual"}),
        )
        .await);
    let r = srv.post_empty(&format!("/api/tasks/{draft}/approve")).await;
    assert_eq!(r.0, 201, "{}", r.1);
    assert!(r.1.get("run").is_none(), "no run for a draft: {}", r.1);
    assert_eq!(r.1["task"]["approval_state"], "approved");
    let t = srv.get_task(&draft).await;
    assert_eq!(t["status"], "draft");
    assert_eq!(count_events(&srv.events(&draft).await, "task.approved"), 1);
    assert!(srv.runs(&draft, "").await.is_empty());
    let r = srv.post_empty(&format!("/api/tasks/{draft}/publish")).await;
    assert_eq!(r.0, 200, "{}", r.1);
    assert_eq!(r.1["run"]["status"], "queued");
    assert_eq!(srv.runs(&draft, "").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn approving_releases_a_run_queued_while_the_task_awaited_approval() {
    // Enqueue is allowed while the task is blocked by its approval. Approving then releases that
    // run instead of enqueuing a second one (one open run per task would refuse it, and the
    // approval could never be given: README, Compatibility).
    let srv = Server::start();
    let gated = id(&srv
        .task_with("gated", json!({"approval_policy": "manual"}))
        .await);
    let queued = srv.enqueue(&gated).await;
    assert_eq!(srv.status_of(&gated).await, "blocked");
    // Not claimable while the approval is pending.
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{}/claim", id(&queued)))
            .await,
        409,
        "invalid_transition",
    );

    let approve = format!("/api/tasks/{gated}/approve");
    let (s, v) = srv.post(&approve, json!({"idempotency_key": "ok"})).await;
    assert_status(&(s, v.clone()), 201);
    assert_eq!(v["task"]["approval_state"], "approved");
    assert_eq!(v["task"]["status"], "ready");
    assert_eq!(
        v["run"]["id"], queued["id"],
        "the queued run is released: {v}"
    );
    // A retry with the same key answers the same.
    let (s, again) = srv.post(&approve, json!({"idempotency_key": "ok"})).await;
    assert_status(&(s, again.clone()), 201);
    assert_eq!(again["run"]["id"], queued["id"], "{again}");
    assert_eq!(count_events(&srv.events(&gated).await, "task.approved"), 1);
    assert_eq!(srv.runs(&gated, "").await.len(), 1, "no second run");
    srv.claim(&id(&queued)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_blocks_without_closing_and_can_be_reset() {
    let srv = Server::start();
    let tid = id(&srv
        .task_with("gated", json!({"approval_policy": "manual"}))
        .await);
    let run = srv.enqueue(&tid).await; // queued but not claimable

    let (s, v) = srv.post_empty(&format!("/api/tasks/{tid}/reject")).await;
    assert_status(&(s, v.clone()), 200);
    assert_eq!(v["task"]["approval_state"], "rejected");
    assert_eq!(v["task"]["status"], "blocked");
    assert_absent(&v["task"], "closed_at");
    assert!(v.get("run").is_none(), "reject returns only the task: {v}");
    // Queued runs stay queued and cannot be claimed.
    assert_eq!(srv.get_run(&id(&run)).await["status"], "queued");
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{}/claim", id(&run)))
            .await,
        409,
        "invalid_transition",
    );
    // Neither reject nor approve works on a rejected task.
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/reject")).await,
        409,
        "invalid_transition",
    );
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/approve")).await,
        409,
        "invalid_transition",
    );
    // Reject needs manual approval.
    let plain = srv.task("plain").await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{plain}/reject")).await,
        409,
        "invalid_transition",
    );
    assert_err(
        &srv.post_empty("/api/tasks/nope/reject").await,
        404,
        "task_not_found",
    );

    // Policy none then manual asks for approval again.
    srv.patch(
        &format!("/api/tasks/{tid}"),
        json!({"approval_policy": "none"}),
    )
    .await;
    assert_eq!(srv.status_of(&tid).await, "ready");
    srv.cancel_run(&id(&run)).await; // note: this cancels the task for good
    assert_eq!(srv.status_of(&tid).await, "canceled");

    let t2 = id(&srv
        .task_with("gated2", json!({"approval_policy": "manual"}))
        .await);
    srv.post_empty(&format!("/api/tasks/{t2}/reject")).await;
    srv.patch(
        &format!("/api/tasks/{t2}"),
        json!({"approval_policy": "none"}),
    )
    .await;
    let (_, v) = srv
        .patch(
            &format!("/api/tasks/{t2}"),
            json!({"approval_policy": "manual"}),
        )
        .await;
    assert_eq!(v["task"]["approval_state"], "pending");
    let (s, v) = srv.post_empty(&format!("/api/tasks/{t2}/approve")).await;
    assert_eq!(s, 201, "{v}");
}

// ---------------------------------------------------------------- start

#[tokio::test(flavor = "multi_thread")]
async fn start_enqueues_and_second_start_needs_the_open_run_closed() {
    let srv = Server::start();
    let tid = srv.task("s").await;
    let (s, v) = srv.post_empty(&format!("/api/tasks/{tid}/start")).await;
    assert_status(&(s, v.clone()), 201);
    assert_eq!(v["task"]["id"], tid.as_str());
    assert_eq!(v["task"]["status"], "ready");
    let r1 = v["run"].clone();
    assert_eq!(r1["status"], "queued");
    assert_eq!(r1["attempt"], 1);
    assert_eq!(r1["origin"], http_origin("start"));
    assert_absent(&r1, "idempotency_key");

    // No invented idempotency key: a second start is a new enqueue, refused while a run is open.
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/start")).await,
        409,
        "open_run_exists",
    );
    // After the run completes, start enqueues attempt 2.
    srv.claim(&id(&r1)).await;
    srv.start_run(&id(&r1)).await;
    srv.complete_run(&id(&r1), None).await;
    assert_eq!(srv.status_of(&tid).await, "completed");
    let (s, v) = srv.post_empty(&format!("/api/tasks/{tid}/start")).await;
    assert_eq!(s, 201, "{v}");
    assert_ne!(v["run"]["id"], r1["id"]);
    assert_eq!(v["run"]["attempt"], 2);
    assert_eq!(v["task"]["status"], "ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_with_idempotency_key_replays() {
    let srv = Server::start();
    let tid = srv.task("s").await;
    let path = format!("/api/tasks/{tid}/start");
    let (s, v1) = srv.post(&path, json!({"idempotency_key": "start-1"})).await;
    assert_eq!(s, 201, "{v1}");
    assert_eq!(v1["run"]["idempotency_key"], "start-1");
    let (s, v2) = srv.post(&path, json!({"idempotency_key": "start-1"})).await;
    assert_eq!(s, 201, "{v2}");
    assert_eq!(v2["run"]["id"], v1["run"]["id"]);
    assert_eq!(srv.runs(&tid, "").await.len(), 1);
    assert_eq!(
        count_events(&srv.events(&tid).await, "task.run_enqueued"),
        1
    );
    // A different key is a new enqueue: refused while the run is open.
    assert_err(
        &srv.post(&path, json!({"idempotency_key": "start-2"})).await,
        409,
        "open_run_exists",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_refuses_draft_blocked_canceled_and_exhausted() {
    let srv = Server::start();
    let draft = id(&srv.task_with("d", json!({"draft": true})).await);
    let blocked = id(&srv
        .task_with("b", json!({"approval_policy": "manual"}))
        .await);
    let canceled = srv.task("c").await;
    srv.post_empty(&format!("/api/tasks/{canceled}/cancel"))
        .await;
    for t in [&draft, &blocked, &canceled] {
        assert_err(
            &srv.post_empty(&format!("/api/tasks/{t}/start")).await,
            409,
            "invalid_transition",
        );
        assert!(srv.runs(t, "").await.is_empty());
    }
    let exhausted = id(&srv.task_with("e", json!({"max_attempts": 1})).await);
    srv.fail_task_once(&exhausted, "no").await;
    assert_eq!(srv.status_of(&exhausted).await, "failed");
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{exhausted}/start"))
            .await,
        409,
        "attempts_exhausted",
    );
    assert_err(
        &srv.post_empty("/api/tasks/nope/start").await,
        404,
        "task_not_found",
    );
}

// ---------------------------------------------------------------- cancel

#[tokio::test(flavor = "multi_thread")]
async fn cancel_cancels_the_whole_tree_but_leaves_terminal_descendants() {
    let srv = Server::start();
    let root = srv.task("root").await;
    let c1 = srv.child(&root, "c1 queued").await;
    let c2 = srv.child(&root, "c2 done").await;
    let g1 = srv.child(&c1, "g1 running").await;
    let g2 = id(&srv
        .create_child(
            &c1,
            json!({"scope": "global", "title": "g2 draft", "draft": true}),
        )
        .await);
    let root_run = id(&srv.enqueue(&root).await);
    let c1_run = id(&srv.enqueue(&c1).await);
    srv.complete_task(&c2).await;
    let g1_run = srv.running_run(&g1).await;

    // A bystander parent and a dependent of the root are not touched.
    let dependent = srv.task("dependent").await;
    srv.add_dep(&dependent, &root).await;

    let (s, v) = srv
        .post(
            &format!("/api/tasks/{root}/cancel"),
            json!({"reason": "  no longer needed ", "metadata": {"ticket": 7}}),
        )
        .await;
    assert_status(&(s, v.clone()), 200);
    assert_eq!(v["task"]["id"], root.as_str());
    assert_eq!(v["task"]["status"], "canceled");
    assert_present(&v["task"], "closed_at");

    for t in [&root, &c1, &g1, &g2] {
        assert_eq!(srv.status_of(t).await, "canceled", "task {t}");
    }
    assert_eq!(
        srv.status_of(&c2).await,
        "completed",
        "terminal descendants are left alone"
    );
    for r in [&root_run, &c1_run, &g1_run] {
        let run = srv.get_run(r).await;
        assert_eq!(run["status"], "canceled", "run {r}");
        assert_present(&run, "ended_at");
    }
    assert_eq!(srv.status_of(&dependent).await, "blocked");
    assert_eq!(
        count_events(&srv.events(&dependent).await, "task.canceled"),
        0
    );

    // Root events: run canceled, then task canceled with reason/metadata, no propagated_from.
    let ev = srv.events(&root).await;
    let tc = only_event(&ev, "task.canceled");
    assert_eq!(tc["payload"]["status"], "canceled");
    assert_eq!(tc["payload"]["reason"], "no longer needed");
    assert_eq!(tc["payload"]["metadata"], json!({"ticket": 7}));
    assert!(tc["payload"].get("propagated_from_task_id").is_none());
    assert_eq!(tc["payload"]["canceled_run_ids"], json!([root_run.clone()]));
    assert_eq!(tc["origin"], http_origin("cancel"));
    let rc = only_event(&ev, "task.run_canceled");
    assert_eq!(rc["run_id"], root_run.as_str());
    assert_eq!(rc["payload"]["status"], "canceled");
    assert!(rc["payload"].get("propagated_from_task_id").is_none());

    // Descendant events carry propagated_from_task_id = root.
    let ev = srv.events(&c1).await;
    let tc = only_event(&ev, "task.canceled");
    assert_eq!(tc["payload"]["propagated_from_task_id"], root.as_str());
    assert_eq!(tc["payload"]["canceled_run_ids"], json!([c1_run.clone()]));
    let rc = only_event(&ev, "task.run_canceled");
    assert_eq!(rc["payload"]["propagated_from_task_id"], root.as_str());
    assert_eq!(rc["run_id"], c1_run.as_str());
    let ev = srv.events(&g2).await;
    let tc = only_event(&ev, "task.canceled");
    assert_eq!(tc["payload"]["propagated_from_task_id"], root.as_str());
    assert!(
        tc["payload"].get("canceled_run_ids").is_none(),
        "no runs: omitted: {tc}"
    );
    assert_eq!(count_events(&srv.events(&c2).await, "task.canceled"), 0);

    // Timeline order on a descendant: run_canceled before task.canceled.
    let types = srv.event_types(&g1).await;
    let rc_pos = types.iter().position(|t| t == "task.run_canceled").unwrap();
    let tc_pos = types.iter().position(|t| t == "task.canceled").unwrap();
    assert!(rc_pos < tc_pos, "{types:?}");

    // Canceling an already canceled root succeeds without new events.
    let before = srv.events(&root).await.len();
    let (s, v) = srv.post_empty(&format!("/api/tasks/{root}/cancel")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["task"]["status"], "canceled");
    assert_eq!(srv.events(&root).await.len(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_guards_and_scope() {
    let srv = Server::start();
    // A completed root with no open run cannot be canceled.
    let done = srv.task("done").await;
    srv.complete_task(&done).await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{done}/cancel")).await,
        409,
        "invalid_transition",
    );
    assert_eq!(srv.status_of(&done).await, "completed");
    // A failed (exhausted) root neither.
    let failed = id(&srv.task_with("failed", json!({"max_attempts": 1})).await);
    srv.fail_task_once(&failed, "x").await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{failed}/cancel")).await,
        409,
        "invalid_transition",
    );
    // A completed root that was re-enqueued has an open run: cancel works.
    srv.enqueue(&done).await;
    assert_eq!(
        srv.post_empty(&format!("/api/tasks/{done}/cancel")).await.0,
        200
    );
    assert_eq!(srv.status_of(&done).await, "canceled");

    assert_err(
        &srv.post_empty("/api/tasks/nope/cancel").await,
        404,
        "task_not_found",
    );

    // Canceling a child never reaches upward.
    let parent = srv.task("parent").await;
    let child = srv.child(&parent, "child").await;
    assert_eq!(
        srv.post_empty(&format!("/api/tasks/{child}/cancel"))
            .await
            .0,
        200
    );
    assert_eq!(srv.status_of(&parent).await, "ready");
    assert_eq!(srv.status_of(&child).await, "canceled");

    // A draft can be canceled.
    let d = id(&srv.task_with("d", json!({"draft": true})).await);
    assert_eq!(
        srv.post_empty(&format!("/api/tasks/{d}/cancel")).await.0,
        200
    );
    assert_eq!(srv.status_of(&d).await, "canceled");
    // A canceled task can never be enqueued again.
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{d}/runs")).await,
        409,
        "invalid_transition",
    );

    // Cancel metadata limit is 64 KiB.
    let t = srv.task("meta").await;
    assert_err(
        &srv.post(
            &format!("/api/tasks/{t}/cancel"),
            json!({"metadata": {"b": blob(70 * 1024)}}),
        )
        .await,
        413,
        "payload_too_large",
    );
    assert_eq!(srv.status_of(&t).await, "ready");
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{t}/cancel"),
            json!({"metadata": {"b": blob(30 * 1024)}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

// ---------------------------------------------------------------- children and tree

#[tokio::test(flavor = "multi_thread")]
async fn children_are_created_under_the_parent_with_events() {
    let srv = Server::start();
    let parent = srv.task("parent").await;
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{parent}/children"),
            json!({"scope": "workspace", "workspace": "ws1", "title": " kid ", "parent_task_id": "ignored"}),
        )
        .await;
    assert_status(&(s, v.clone()), 201);
    let child = &v["task"];
    let cid = id(child);
    assert_eq!(child["parent_task_id"], parent.as_str());
    assert_eq!(child["title"], "kid");
    assert_eq!(child["workspace_id"], "ws1");
    assert_eq!(child["origin"], http_origin("create_child"));

    let ce = srv.events(&cid).await;
    let created = only_event(&ce, "task.created");
    assert_eq!(created["payload"]["parent_task_id"], parent.as_str());
    assert_eq!(created["payload"]["scope"], "workspace");
    assert_eq!(created["payload"]["workspace_id"], "ws1");
    assert_eq!(created["origin"], http_origin("create_child"));
    let pe = srv.events(&parent).await;
    let cc = only_event(&pe, "task.child_created");
    assert_eq!(
        cc["payload"],
        json!({"child_task_id": cid.clone(), "child_scope": "workspace", "child_workspace_id": "ws1"})
    );
    assert_eq!(cc["origin"], http_origin("create_child"));

    // Detail of the parent lists children (drafts included) and the summary counts them.
    let d2 = id(&srv
        .create_child(
            &parent,
            json!({"scope": "global", "title": "draft kid", "draft": true}),
        )
        .await);
    let d = srv.detail(&parent).await;
    let kids: Vec<String> = d["children"]
        .as_array()
        .expect("children")
        .iter()
        .map(id)
        .collect();
    assert_eq!(
        kids,
        vec![d2.clone(), cid.clone()],
        "children newest activity first"
    );
    assert_eq!(d["summary"]["child_count"], 2);
    // A child does not change its parent's status.
    assert_eq!(d["task"]["status"], "ready");

    assert_err(
        &srv.post(
            "/api/tasks/nope/children",
            json!({"scope": "global", "title": "x"}),
        )
        .await,
        404,
        "task_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn children_scope_rules() {
    let srv = Server::start();
    let wsp = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "ws1", "title": "ws parent"}))
        .await);
    // Workspace parent: only same-workspace children.
    srv.create_child(
        &wsp,
        json!({"scope": "workspace", "workspace": "ws1", "title": "ok"}),
    )
    .await;
    for body in [
        json!({"scope": "global", "title": "global under ws"}),
        json!({"scope": "workspace", "workspace": "ws2", "title": "other ws"}),
    ] {
        assert_err(
            &srv.post(&format!("/api/tasks/{wsp}/children"), body).await,
            422,
            "validation_failed",
        );
    }
    // Missing title / scope are validation errors.
    assert_err(
        &srv.post(
            &format!("/api/tasks/{wsp}/children"),
            json!({"scope": "workspace", "workspace": "ws1"}),
        )
        .await,
        422,
        "validation_failed",
    );
    assert_eq!(srv.detail(&wsp).await["summary"]["child_count"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn hierarchy_depth_limit_is_eight() {
    let srv = Server::start();
    let mut parent = srv.task("depth 1").await;
    for depth in 2..=8 {
        parent = srv.child(&parent, &format!("depth {depth}")).await;
    }
    assert_err(
        &srv.post(
            &format!("/api/tasks/{parent}/children"),
            json!({"scope": "global", "title": "depth 9"}),
        )
        .await,
        409,
        "graph_limit_exceeded",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_64_direct_children() {
    let srv = Server::start();
    let parent = srv.task("many").await;
    for i in 0..64 {
        srv.child(&parent, &format!("child {i}")).await;
    }
    assert_err(
        &srv.post(
            &format!("/api/tasks/{parent}/children"),
            json!({"scope": "global", "title": "child 65"}),
        )
        .await,
        409,
        "graph_limit_exceeded",
    );
    assert_eq!(srv.detail(&parent).await["summary"]["child_count"], 64);
    // The limit is per parent: a child can still have its own children.
    let kid = srv
        .list_ids(&format!("parent_task_id={parent}&limit=1"))
        .await[0]
        .clone();
    srv.child(&kid, "grandchild").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tree_view_lists_descendants_breadth_first() {
    let srv = Server::start();
    let root = srv.task("root").await;
    let idle = srv.child(&root, "idle").await;
    let active = srv.child(&root, "active").await;
    let grand = srv.child(&active, "grand").await;
    srv.running_run(&active).await;

    let (s, v) = srv.get(&format!("/api/tasks/{root}/tree")).await;
    assert_eq!(s, 200, "{v}");
    let tree = &v["tree"];
    assert_eq!(tree["root"]["task"]["id"], root.as_str());
    assert_eq!(tree["root"]["depth"], 0);
    assert_eq!(tree["root"]["child_count"], 2);
    let desc = tree["descendants"].as_array().expect("descendants");
    let ids: Vec<&str> = desc
        .iter()
        .map(|n| n["task"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![active.as_str(), idle.as_str(), grand.as_str()]);
    assert_eq!(desc[0]["depth"], 1);
    assert_eq!(desc[0]["child_count"], 1);
    assert_eq!(desc[0]["active_run"]["status"], "running");
    assert_eq!(desc[0]["task"]["status"], "in_progress");
    assert_eq!(desc[2]["depth"], 2);
    assert_eq!(desc[2]["parent_task_id"], active.as_str());

    // A subtree root is depth 0 even if it has a parent.
    let (_, v) = srv.get(&format!("/api/tasks/{active}/tree")).await;
    assert_eq!(v["tree"]["root"]["depth"], 0);
    assert_eq!(v["tree"]["root"]["parent_task_id"], root.as_str());
    assert_err(
        &srv.get("/api/tasks/nope/tree").await,
        404,
        "task_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn execution_idempotency_keys_replay_without_rechecking() {
    // A hit returns the stored {task, run}.
    let srv = Server::start();
    // publish: 200 both times, same run, even though the task is no longer a draft.
    let d = id(&srv.task_with("d", json!({"draft": true})).await);
    let p = format!("/api/tasks/{d}/publish");
    let (s1, v1) = srv.post(&p, json!({"idempotency_key": "pub-1"})).await;
    assert_eq!(s1, 200, "{v1}");
    let (s2, v2) = srv.post(&p, json!({"idempotency_key": "pub-1"})).await;
    assert_eq!(s2, 200, "{v2}");
    assert_eq!(v2["run"]["id"], v1["run"]["id"]);
    assert_eq!(count_events(&srv.events(&d).await, "task.published"), 1);

    // approve: 201 both times, same run, although approval is no longer pending.
    let a = id(&srv
        .task_with("a", json!({"approval_policy": "manual"}))
        .await);
    let p = format!("/api/tasks/{a}/approve");
    let (s1, v1) = srv.post(&p, json!({"idempotency_key": "appr-1"})).await;
    assert_eq!(s1, 201, "{v1}");
    let (s2, v2) = srv.post(&p, json!({"idempotency_key": "appr-1"})).await;
    assert_eq!(s2, 201, "{v2}");
    assert_eq!(v2["run"]["id"], v1["run"]["id"]);
    assert_eq!(count_events(&srv.events(&a).await, "task.approved"), 1);

    // start: a key bound to one task cannot be used for another task.
    let t1 = srv.task("t1").await;
    let t2 = srv.task("t2").await;
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{t1}/start"),
            json!({"idempotency_key": "st"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_err(
        &srv.post(
            &format!("/api/tasks/{t2}/start"),
            json!({"idempotency_key": "st"}),
        )
        .await,
        409,
        "idempotency_key_conflict",
    );
    assert!(srv.runs(&t2, "").await.is_empty());
}
