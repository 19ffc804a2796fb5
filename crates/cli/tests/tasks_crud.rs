//! Task create / get / list / patch / delete.
mod common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn create_minimal_task_has_documented_defaults() {
    let srv = Server::start();
    let (s, v) = srv
        .post(
            "/api/tasks",
            json!({"scope": "global", "title": "  Write the report  "}),
        )
        .await;
    assert_status(&(s, v.clone()), 201);
    let t = &v["task"];
    let tid = str_of(t, "id");
    assert!(
        tid.starts_with("task-") && tid.len() > 5,
        "generated id: {tid}"
    );
    assert_eq!(t["title"], "Write the report", "title is trimmed");
    assert_eq!(t["scope"], "global");
    assert_eq!(t["status"], "ready");
    assert_eq!(t["priority"], "medium");
    assert_eq!(t["max_attempts"], 3);
    assert_eq!(t["approval_policy"], "none");
    assert_eq!(t["approval_state"], "not_required");
    assert_eq!(t["created_by"], human());
    assert_eq!(t["origin"], http_origin("create"));
    assert_present(t, "created_at");
    assert_present(t, "updated_at");
    for k in [
        "workspace_id",
        "description",
        "identifier",
        "parent_task_id",
        "network_channel",
        "owner",
        "closed_at",
        "current_run_id",
    ] {
        assert_absent(t, k);
    }
    // `draft` only appears when true; auto_enqueue_on_ready is false (or omitted).
    assert!(
        t.get("draft").is_none() || t["draft"] == false,
        "draft: {t}"
    );
    assert!(
        t.get("auto_enqueue_on_ready").is_none() || t["auto_enqueue_on_ready"] == false,
        "{t}"
    );

    // Creating a task never enqueues a run.
    assert!(srv.runs(&tid, "").await.is_empty());
    let d = srv.detail(&tid).await;
    assert!(d.get("runs").is_none() || d["runs"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_with_every_field_echoes_normalized_values() {
    let srv = Server::start();
    let t = srv
        .create_task(json!({
            "id": "  my-task-1  ",
            "identifier": "  OPS-42 ",
            "title": "Full",
            "description": "  some words  ",
            "scope": " GLOBAL ",
            "priority": " High ",
            "max_attempts": 5,
            "metadata": {"k": [1, 2, {"deep": true}]},
            "network_channel": "ops-1",
            "owner": {"kind": " Agent_Session ", "ref": " sess-9 "},
            "approval_policy": "MANUAL",
            "auto_enqueue_on_ready": true,
            "required_capabilities": ["gpu", "rust"],
            "preferred_capabilities": ["fast"]
        }))
        .await;
    assert_eq!(t["id"], "my-task-1", "client id is trimmed and kept");
    assert_eq!(t["identifier"], "OPS-42");
    assert_eq!(t["description"], "some words");
    assert_eq!(t["scope"], "global");
    assert_eq!(t["priority"], "high");
    assert_eq!(t["max_attempts"], 5);
    assert_eq!(t["metadata"], json!({"k": [1, 2, {"deep": true}]}));
    assert_eq!(t["network_channel"], "ops-1");
    assert_eq!(t["owner"], owner("agent_session", "sess-9"));
    assert_eq!(t["approval_policy"], "manual");
    assert_eq!(t["approval_state"], "pending");
    assert_eq!(
        t["status"], "blocked",
        "manual approval pending blocks the task"
    );
    assert_eq!(t["auto_enqueue_on_ready"], true);
    assert_eq!(t["required_capabilities"], json!(["gpu", "rust"]));
    assert_eq!(t["preferred_capabilities"], json!(["fast"]));

    // The detail view returns the same record.
    let got = srv.get_task("my-task-1").await;
    for k in [
        "identifier",
        "description",
        "priority",
        "max_attempts",
        "metadata",
        "network_channel",
        "owner",
        "approval_policy",
        "approval_state",
        "status",
        "required_capabilities",
        "preferred_capabilities",
        "created_at",
    ] {
        assert_eq!(got[k], t[k], "field {k} differs between create and get");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn create_workspace_task_and_scope_binding_rules() {
    let srv = Server::start();
    let t = srv
        .create_task(json!({"scope": "workspace", "workspace": " ws-a/team.1:x ", "title": "W"}))
        .await;
    assert_eq!(t["scope"], "workspace");
    assert_eq!(t["workspace_id"], "ws-a/team.1:x");

    // workspace required for scope=workspace, forbidden for global, charset and length checked.
    for body in [
        json!({"scope": "workspace", "title": "W"}),
        json!({"scope": "workspace", "workspace": "", "title": "W"}),
        json!({"scope": "global", "workspace": "ws-a", "title": "W"}),
        json!({"scope": "workspace", "workspace": "has space", "title": "W"}),
        json!({"scope": "workspace", "workspace": "semi;colon", "title": "W"}),
        json!({"scope": "workspace", "workspace": "x".repeat(129), "title": "W"}),
    ] {
        assert_err(
            &srv.post("/api/tasks", body.clone()).await,
            422,
            "validation_failed",
        );
    }
    // 128 characters is fine.
    srv.create_task(json!({"scope": "workspace", "workspace": "w".repeat(128), "title": "W"}))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_draft_is_draft_and_hidden_from_default_list() {
    let srv = Server::start();
    let d = srv.task_with("Draft", json!({"draft": true})).await;
    assert_eq!(d["status"], "draft");
    assert_eq!(d["draft"], true);
    let did = id(&d);
    let r = srv.task("Ready").await;

    assert_eq!(srv.list_ids("").await, vec![r.clone()]);
    assert_eq!(srv.list_ids("include_drafts=false").await, vec![r.clone()]);
    let with = srv.list_ids("include_drafts=true").await;
    assert!(with.contains(&did) && with.contains(&r), "{with:?}");
    assert_eq!(srv.list_ids("status=draft").await, vec![did.clone()]);
    // The detail view of a draft works.
    assert_eq!(srv.get_task(&did).await["draft"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_client_id_is_409() {
    let srv = Server::start();
    srv.task_with("one", json!({"id": "dup-1"})).await;
    let r = srv
        .post(
            "/api/tasks",
            json!({"id": "dup-1", "scope": "global", "title": "two"}),
        )
        .await;
    assert_err(&r, 409, "duplicate_task");
    assert_eq!(srv.get_task("dup-1").await["title"], "one");
    // Same for a child with a taken id.
    let parent = srv.task("p").await;
    let r = srv
        .post(
            &format!("/api/tasks/{parent}/children"),
            json!({"id": "dup-1", "scope": "global", "title": "c"}),
        )
        .await;
    assert_err(&r, 409, "duplicate_task");
}

#[tokio::test(flavor = "multi_thread")]
async fn get_detail_shape_and_404() {
    let srv = Server::start();
    let t = srv
        .task_with(
            "Detail",
            json!({"description": "desc", "metadata": {"a": 1}}),
        )
        .await;
    let tid = id(&t);
    let (s, v) = srv.get(&format!("/api/tasks/{tid}")).await;
    assert_eq!(s, 200);
    let d = &v["task"];
    // summary: no description or metadata; has last_activity_at and latest_event_seq.
    assert_eq!(d["summary"]["id"], tid.as_str());
    assert_absent(&d["summary"], "description");
    assert_absent(&d["summary"], "metadata");
    assert_present(&d["summary"], "last_activity_at");
    assert_eq!(d["summary"]["status"], "ready");
    // task: full record.
    assert_eq!(d["task"]["description"], "desc");
    assert_eq!(d["task"]["metadata"], json!({"a": 1}));
    assert!(d["task"]["latest_event_seq"].as_i64().unwrap() > 0, "{d}");
    // the create event is there.
    let events = d["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event_type"], "task.created");
    // no children/dependencies/runs: omitted or empty.
    for k in ["children", "dependencies", "dependency_references", "runs"] {
        assert!(
            d.get(k).is_none() || d[k].as_array().is_some_and(|a| a.is_empty()),
            "{k} should be omitted: {d}"
        );
    }

    assert_err(
        &srv.get("/api/tasks/task-doesnotexist").await,
        404,
        "task_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_orders_by_latest_activity() {
    let srv = Server::start();
    let a = srv.task("A").await;
    let b = srv.task("B").await;
    let c = srv.task("C").await;
    assert_eq!(
        srv.list_ids("").await,
        vec![c.clone(), b.clone(), a.clone()]
    );

    // An update moves A to the front.
    let (s, _) = srv
        .patch(&format!("/api/tasks/{a}"), json!({"title": "A2"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        srv.list_ids("").await,
        vec![a.clone(), c.clone(), b.clone()]
    );

    // Run activity counts too: enqueueing B moves it to the front.
    srv.enqueue(&b).await;
    assert_eq!(
        srv.list_ids("").await,
        vec![b.clone(), a.clone(), c.clone()]
    );

    // Summary shape: no description/metadata, last_activity_at present.
    let items = srv.list("").await;
    for it in &items {
        assert_absent(it, "description");
        assert_absent(it, "metadata");
        assert_present(it, "last_activity_at");
    }
    // B has an active_run chip for its queued run.
    assert_eq!(items[0]["active_run"]["status"], "queued");
    assert_eq!(items[0]["active_run"]["max_attempts"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters() {
    let srv = Server::start();
    let low = id(&srv
        .task_with(
            "Alpha report",
            json!({"priority": "low", "identifier": "OPS-1", "network_channel": "chan-a"}),
        )
        .await);
    let urgent = id(&srv
        .task_with(
            "Beta fix",
            json!({"priority": "urgent", "owner": owner("pool", "builders")}),
        )
        .await);
    let manual = id(&srv
        .task_with("Gamma review", json!({"approval_policy": "manual"}))
        .await);
    let ws = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "ws1", "title": "Delta ws"}))
        .await);
    let ws2 = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "ws2", "title": "Eps ws"}))
        .await);
    let child = srv.child(&urgent, "Child of beta").await;
    let draft = id(&srv.task_with("Draft alpha", json!({"draft": true})).await);

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let q = |query: &'static str| {
        let srv = &srv;
        async move { sorted(srv.list_ids(query).await) }
    };

    assert_eq!(q("priority=low").await, vec![low.clone()]);
    assert_eq!(q("priority=urgent").await, vec![urgent.clone()]);
    assert_eq!(q("status=blocked").await, vec![manual.clone()]);
    assert_eq!(q("approval_state=pending").await, vec![manual.clone()]);
    assert_eq!(q("owner_kind=pool").await, vec![urgent.clone()]);
    assert_eq!(
        q("owner_kind=pool&owner_ref=builders").await,
        vec![urgent.clone()]
    );
    assert!(q("owner_kind=pool&owner_ref=other").await.is_empty());
    assert_eq!(q("scope=workspace&workspace=ws1").await, vec![ws.clone()]);
    assert_eq!(q("workspace=ws2").await, vec![ws2.clone()]);
    assert_eq!(
        q("scope=global").await,
        sorted(vec![
            low.clone(),
            urgent.clone(),
            manual.clone(),
            child.clone()
        ])
    );
    assert_eq!(
        srv.list_ids(&format!("parent_task_id={urgent}")).await,
        vec![child.clone()]
    );
    assert_eq!(q("network_channel=chan-a").await, vec![low.clone()]);
    // query: case-insensitive substring of title or identifier; drafts still hidden.
    assert_eq!(q("query=ALPHA").await, vec![low.clone()]);
    assert_eq!(q("query=ops-1").await, vec![low.clone()]);
    assert_eq!(
        q("query=alpha&include_drafts=true").await,
        sorted(vec![low.clone(), draft.clone()])
    );
    assert!(q("query=nothing-matches").await.is_empty());
    // status=pending is accepted but never matches.
    assert!(q("status=pending").await.is_empty());
    // Combined filters AND together.
    assert!(q("priority=low&status=blocked").await.is_empty());
    // An empty result is an empty array.
    let (s, v) = srv.get("/api/tasks?priority=high").await;
    assert_eq!(s, 200);
    assert_eq!(v["tasks"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_limit_skips_hidden_drafts() {
    let srv = Server::start();
    let a = srv.task("a").await;
    let b = srv.task("b").await;
    for i in 0..5 {
        srv.task_with(&format!("draft {i}"), json!({"draft": true}))
            .await;
    }
    // Drafts are newer than a and b, yet limit=2 still returns two non-drafts.
    assert_eq!(srv.list_ids("limit=2").await, vec![b.clone(), a.clone()]);
    assert_eq!(srv.list_ids("limit=1").await, vec![b.clone()]);
    assert_eq!(
        srv.list_ids("limit=0").await.len(),
        2,
        "limit=0 means unlimited"
    );
    assert_eq!(srv.list_ids("include_drafts=true&limit=3").await.len(), 3);
    assert_eq!(srv.list_ids("include_drafts=true").await.len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_updates_fields_and_records_changed_fields_in_fixed_order() {
    let srv = Server::start();
    let t = srv.task_with("Old", json!({"description": "d0"})).await;
    let tid = id(&t);
    let before_updated = str_of(&t, "updated_at");

    // Every mutable field at once, sent in scrambled order.
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{tid}"),
            json!({
                "owner": {"kind": "HUMAN", "ref": "alice"},
                "network_channel": "chan-x",
                "metadata": {"m": 1},
                "approval_policy": "manual",
                "auto_enqueue_on_ready": true,
                "max_attempts": 7,
                "priority": " URGENT ",
                "description": "  d1 ",
                "title": "  New  "
            }),
        )
        .await;
    assert_status(&(s, v.clone()), 200);
    let p = &v["task"];
    assert_eq!(p["title"], "New");
    assert_eq!(p["description"], "d1");
    assert_eq!(p["priority"], "urgent");
    assert_eq!(p["max_attempts"], 7);
    assert_eq!(p["auto_enqueue_on_ready"], true);
    assert_eq!(p["approval_policy"], "manual");
    assert_eq!(
        p["approval_state"], "pending",
        "switching to manual resets approval to pending"
    );
    assert_eq!(
        p["status"], "blocked",
        "PATCH reconciles: manual+pending blocks"
    );
    assert_eq!(p["metadata"], json!({"m": 1}));
    assert_eq!(p["network_channel"], "chan-x");
    assert_eq!(p["owner"], owner("human", "alice"));
    assert!(str_of(p, "updated_at") > before_updated, "updated_at moves");
    assert_eq!(p["created_at"], t["created_at"]);

    let events = srv.events(&tid).await;
    let upd = only_event(&events, "task.updated");
    assert_eq!(
        upd["payload"]["changed_fields"],
        json!([
            "title",
            "description",
            "priority",
            "max_attempts",
            "auto_enqueue_on_ready",
            "approval_policy",
            "metadata",
            "network_channel",
            "owner"
        ])
    );
    assert_eq!(upd["payload"]["status"], "blocked");
    assert_eq!(upd["actor"], human());
    assert_eq!(upd["origin"], http_origin("update"));

    // A partial patch where some values equal the current ones lists only the real changes.
    let (s, _) = srv
        .patch(
            &format!("/api/tasks/{tid}"),
            json!({"title": "New", "priority": "low", "owner": {"kind": "human", "ref": "alice"}}),
        )
        .await;
    assert_eq!(s, 200);
    let events = srv.events(&tid).await;
    assert_eq!(count_events(&events, "task.updated"), 2);
    let last = events.last().unwrap();
    assert_eq!(last["event_type"], "task.updated");
    assert_eq!(last["payload"]["changed_fields"], json!(["priority"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn noop_patch_records_nothing_and_returns_current_record() {
    let srv = Server::start();
    let t = srv
        .task_with("Same", json!({"priority": "high", "description": "d"}))
        .await;
    let tid = id(&t);
    let (s, v) = srv
        .patch(
            &format!("/api/tasks/{tid}"),
            json!({"title": " Same ", "priority": "HIGH", "description": "d", "max_attempts": null}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["task"]["title"], "Same");
    assert_eq!(
        v["task"]["updated_at"], t["updated_at"],
        "no-op leaves updated_at alone"
    );
    let events = srv.events(&tid).await;
    assert_eq!(
        count_events(&events, "task.updated"),
        0,
        "no-op PATCH records nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_null_means_unchanged_and_empty_string_clears() {
    let srv = Server::start();
    let t = srv
        .task_with(
            "Clearable",
            json!({"description": "d", "network_channel": "c1", "owner": owner("pool", "p"), "metadata": {"x": 1}}),
        )
        .await;
    let tid = id(&t);
    let path = format!("/api/tasks/{tid}");
    // null = no change (combined with one real change so the request is valid)
    let (s, v) = srv
        .patch(
            &path,
            json!({"title": "T2", "description": null, "network_channel": null, "owner": null, "metadata": null, "auto_enqueue_on_ready": null}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["task"]["description"], "d");
    assert_eq!(v["task"]["network_channel"], "c1");
    assert_eq!(v["task"]["owner"], owner("pool", "p"));
    assert_eq!(v["task"]["metadata"], json!({"x": 1}));

    // "" clears description and network_channel; clear_owner removes the owner.
    let (s, v) = srv
        .patch(
            &path,
            json!({"description": "", "network_channel": "", "clear_owner": true}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_absent(&v["task"], "description");
    assert_absent(&v["task"], "network_channel");
    assert_absent(&v["task"], "owner");
    let events = srv.events(&tid).await;
    let last = events.last().unwrap();
    assert_eq!(
        last["payload"]["changed_fields"],
        json!(["description", "network_channel", "owner"])
    );

    // Metadata is replaced whole.
    let (s, v) = srv.patch(&path, json!({"metadata": {"y": 2}})).await;
    assert_eq!(s, 200);
    assert_eq!(v["task"]["metadata"], json!({"y": 2}));
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_validation() {
    let srv = Server::start();
    let tid = srv.task("v").await;
    let path = format!("/api/tasks/{tid}");
    // The patch is validated before the task is loaded.
    assert_err(
        &srv.patch("/api/tasks/task-missing", json!({})).await,
        422,
        "validation_failed",
    );
    for body in [
        json!({}),
        json!({"title": null}),
        json!({"clear_owner": false}),
        json!({"title": "   "}),
        json!({"title": ""}),
        json!({"priority": "extreme"}),
        json!({"max_attempts": 0}),
        json!({"max_attempts": 11}),
        json!({"max_attempts": -2}),
        json!({"approval_policy": "sometimes"}),
        json!({"network_channel": "Bad Channel"}),
        json!({"owner": {"kind": "robot", "ref": "r"}}),
        json!({"owner": {"kind": "human", "ref": ""}}),
        json!({"owner": {"kind": "", "ref": ""}}),
        json!({"owner": {"kind": "human", "ref": "a"}, "clear_owner": true}),
        json!({"parent_task_id": "task-other"}),
        json!({"scope": "workspace"}),
        json!({"id": "new-id"}),
    ] {
        assert_err(
            &srv.patch(&path, body.clone()).await,
            422,
            "validation_failed",
        );
    }
    // The record did not change.
    assert_eq!(srv.events(&tid).await.len(), 1);
    // A valid patch on a missing task is 404.
    assert_err(
        &srv.patch("/api/tasks/task-missing", json!({"title": "x"}))
            .await,
        404,
        "task_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_max_attempts_reconciles_failed_and_ready() {
    let srv = Server::start();
    let tid = id(&srv.task_with("retry", json!({"max_attempts": 2})).await);
    srv.fail_task_once(&tid, "boom 1").await;
    assert_eq!(srv.status_of(&tid).await, "ready");
    // Lowering the budget to the attempts already used makes the task failed.
    let (s, v) = srv
        .patch(&format!("/api/tasks/{tid}"), json!({"max_attempts": 1}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["task"]["status"], "failed");
    assert_present(&v["task"], "closed_at");
    assert_eq!(srv.list_ids("status=failed").await, vec![tid.clone()]);
    // Raising it brings it back.
    let (s, v) = srv
        .patch(&format!("/api/tasks/{tid}"), json!({"max_attempts": 3}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["task"]["status"], "ready");
    assert_absent(&v["task"], "closed_at");
    assert_eq!(srv.list_ids("status=ready").await, vec![tid.clone()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_approval_policy_round_trip() {
    let srv = Server::start();
    let tid = srv.task("p").await;
    let path = format!("/api/tasks/{tid}");
    let (_, v) = srv.patch(&path, json!({"approval_policy": "manual"})).await;
    assert_eq!(v["task"]["approval_state"], "pending");
    assert_eq!(v["task"]["status"], "blocked");
    let (_, v) = srv.patch(&path, json!({"approval_policy": "none"})).await;
    assert_eq!(v["task"]["approval_state"], "not_required");
    assert_eq!(v["task"]["status"], "ready");
    // Sending the same policy again is a no-op.
    let (s, v) = srv.patch(&path, json!({"approval_policy": "none"})).await;
    assert_eq!(s, 200);
    assert_eq!(v["task"]["status"], "ready");
    let events = srv.events(&tid).await;
    assert_eq!(count_events(&events, "task.updated"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_canceled_task_is_allowed_and_stays_canceled() {
    let srv = Server::start();
    let tid = srv.task("c").await;
    let (s, _) = srv.post_empty(&format!("/api/tasks/{tid}/cancel")).await;
    assert_eq!(s, 200);
    let (s, v) = srv
        .patch(&format!("/api/tasks/{tid}"), json!({"title": "renamed"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["task"]["status"], "canceled");
    assert_eq!(v["task"]["title"], "renamed");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_rules() {
    let srv = Server::start();
    // Plain delete: 204, no body, gone afterwards.
    let t = srv.task("gone").await;
    let (s, v) = srv.delete(&format!("/api/tasks/{t}")).await;
    assert_eq!(s, 204);
    assert!(v.is_null(), "204 has no body: {v}");
    assert_err(
        &srv.get(&format!("/api/tasks/{t}")).await,
        404,
        "task_not_found",
    );
    assert_err(
        &srv.delete(&format!("/api/tasks/{t}")).await,
        404,
        "task_not_found",
    );
    assert!(!srv.list_ids("include_drafts=true").await.contains(&t));

    // Children block delete.
    let parent = srv.task("parent").await;
    let child = srv.child(&parent, "child").await;
    assert_err(
        &srv.delete(&format!("/api/tasks/{parent}")).await,
        400,
        "task_has_children",
    );
    // Open runs block delete (queued, then claimed).
    let run = srv.enqueue(&child).await;
    assert_err(
        &srv.delete(&format!("/api/tasks/{child}")).await,
        400,
        "task_has_open_runs",
    );
    srv.claim(&id(&run)).await;
    assert_err(
        &srv.delete(&format!("/api/tasks/{child}")).await,
        400,
        "task_has_open_runs",
    );
    // Terminal tasks can be deleted; then the parent can go too.
    srv.start_run(&id(&run)).await;
    srv.complete_run(&id(&run), None).await;
    assert_eq!(srv.delete(&format!("/api/tasks/{child}")).await.0, 204);
    assert_err(
        &srv.get(&format!("/api/task-runs/{}", id(&run))).await,
        404,
        "run_not_found",
    );
    assert_eq!(srv.delete(&format!("/api/tasks/{parent}")).await.0, 204);

    // Drafts and canceled tasks can be deleted.
    let d = id(&srv.task_with("d", json!({"draft": true})).await);
    assert_eq!(srv.delete(&format!("/api/tasks/{d}")).await.0, 204);
    let c = srv.task("c").await;
    srv.post_empty(&format!("/api/tasks/{c}/cancel")).await;
    assert_eq!(srv.delete(&format!("/api/tasks/{c}")).await.0, 204);
    // A deleted id can be reused; the old events went with the old task.
    srv.task_with("again", json!({"id": c.clone()})).await;
    assert_eq!(srv.event_types(&c).await, vec!["task.created"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn timestamps_are_rfc3339_utc_with_microseconds() {
    let srv = Server::start();
    let tid = srv.task("ts").await;
    let rid = srv.running_run(&tid).await;
    srv.complete_run(&rid, Some(json!({"ok": true}))).await;
    let mut docs = vec![
        srv.get(&format!("/api/tasks/{tid}")).await.1,
        srv.get("/api/tasks").await.1,
        srv.get(&format!("/api/task-runs/{rid}")).await.1,
        srv.get(&format!("/api/tasks/{tid}/runs")).await.1,
    ];
    docs.push(srv.get(&format!("/api/tasks/{tid}/timeline")).await.1);

    fn walk(v: &Value, path: &str, bad: &mut Vec<String>, seen: &mut usize) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = format!("{path}.{k}");
                    if let Value::String(s) = x {
                        if k.ends_with("_at") || k == "timestamp" || k == "lease_until" {
                            *seen += 1;
                            if !is_micros_utc(s) {
                                bad.push(format!("{p} = {s}"));
                            }
                        }
                    }
                    walk(x, &p, bad, seen);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{path}[{i}]"), bad, seen);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    let mut seen = 0;
    for d in &docs {
        walk(d, "", &mut bad, &mut seen);
    }
    assert!(seen > 20, "expected many timestamps, saw {seen}");
    assert!(
        bad.is_empty(),
        "timestamps not in RFC 3339 UTC micros: {bad:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn string_inputs_are_trimmed_and_nulls_mean_default() {
    let srv = Server::start();
    let t = srv
        .create_task(json!({
            "scope": "global",
            "title": "  héllo 🌍  ",
            "network_channel": " ops ",
            "owner": null,
            "max_attempts": null,
            "description": "  ünïcode  "
        }))
        .await;
    assert_eq!(t["title"], "héllo 🌍");
    assert_eq!(t["network_channel"], "ops");
    assert_eq!(t["description"], "ünïcode");
    assert_absent(&t, "owner");
    assert_eq!(t["max_attempts"], 3);
    let got = srv.get_task(&id(&t)).await;
    assert_eq!(got["title"], "héllo 🌍");
}
