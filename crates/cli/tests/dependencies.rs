//! Dependencies: add/remove, cycles, limits, reconcile of dependents, auto_enqueue_on_ready.
mod common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn add_dependency_blocks_the_task_and_returns_detail() {
    let srv = Server::start();
    let blocker = id(&srv
        .task_with("blocker", json!({"identifier": "B-1", "priority": "high"}))
        .await);
    let tid = srv.task("dependent").await;
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{tid}/dependencies"),
            json!({"depends_on_task_id": format!(" {blocker} "), "kind": " BLOCKS "}),
        )
        .await;
    assert_status(&(s, v.clone()), 200);
    let d = &v["task"];
    assert_eq!(d["task"]["id"], tid.as_str());
    assert_eq!(d["task"]["status"], "blocked");
    assert_eq!(d["summary"]["status"], "blocked");
    assert_eq!(d["summary"]["dependency_count"], 1);
    let deps = d["dependencies"].as_array().expect("dependencies");
    assert_eq!(deps.len(), 1);
    assert_eq!(deps[0]["task_id"], tid.as_str());
    assert_eq!(deps[0]["depends_on_task_id"], blocker.as_str());
    assert_eq!(deps[0]["kind"], "blocks");
    assert_present(&deps[0], "created_at");
    let refs = d["dependency_references"]
        .as_array()
        .expect("dependency_references");
    assert_eq!(refs[0]["depends_on"]["id"], blocker.as_str());
    assert_eq!(refs[0]["depends_on"]["title"], "blocker");
    assert_eq!(refs[0]["depends_on"]["identifier"], "B-1");
    assert_eq!(refs[0]["depends_on"]["status"], "ready");
    assert_eq!(refs[0]["depends_on"]["priority"], "high");
    // The summary in lists carries the same edge.
    let item = srv
        .list("status=blocked")
        .await
        .into_iter()
        .find(|t| t["id"] == tid.as_str())
        .expect("dependent listed as blocked");
    assert_eq!(item["dependency_count"], 1);
    assert_eq!(
        item["dependencies"][0]["depends_on"]["id"],
        blocker.as_str()
    );

    let ev = srv.events(&tid).await;
    let added = only_event(&ev, "task.dependency_added");
    assert_eq!(
        added["payload"],
        json!({"depends_on_task_id": blocker.clone(), "kind": "blocks", "status": "blocked"})
    );
    assert_eq!(added["origin"], http_origin("add_dependency"));
    // Nothing is recorded on the blocker.
    assert_eq!(srv.events(&blocker).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn dependency_input_errors() {
    let srv = Server::start();
    let a = srv.task("a").await;
    let b = srv.task("b").await;
    let path = format!("/api/tasks/{a}/dependencies");
    for body in [
        json!({}),
        json!({"depends_on_task_id": ""}),
        json!({"depends_on_task_id": "  "}),
        json!({"depends_on_task_id": a.clone()}),
        json!({"depends_on_task_id": b.clone(), "kind": "relates"}),
    ] {
        assert_err(
            &srv.post(&path, body.clone()).await,
            422,
            "validation_failed",
        );
    }
    assert_err(
        &srv.post(&path, json!({"depends_on_task_id": "task-missing"}))
            .await,
        404,
        "task_not_found",
    );
    assert_err(
        &srv.post(
            "/api/tasks/task-missing/dependencies",
            json!({"depends_on_task_id": b.clone()}),
        )
        .await,
        404,
        "task_not_found",
    );
    // An empty kind means blocks.
    let (s, v) = srv
        .post(&path, json!({"depends_on_task_id": b.clone(), "kind": ""}))
        .await;
    assert_eq!(s, 200, "{v}");
    // Duplicate edge.
    assert_err(
        &srv.post(&path, json!({"depends_on_task_id": b.clone()}))
            .await,
        409,
        "duplicate_dependency",
    );
    assert_eq!(srv.detail(&a).await["summary"]["dependency_count"], 1);
    // Remove errors.
    assert_err(
        &srv.delete(&format!("/api/tasks/{b}/dependencies/{a}"))
            .await,
        404,
        "dependency_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cycles_are_refused() {
    let srv = Server::start();
    let a = srv.task("a").await;
    let b = srv.task("b").await;
    let c = srv.task("c").await;
    srv.add_dep(&a, &b).await; // a waits for b
    assert_err(
        &srv.post(
            &format!("/api/tasks/{b}/dependencies"),
            json!({"depends_on_task_id": a.clone()}),
        )
        .await,
        409,
        "dependency_cycle",
    );
    srv.add_dep(&b, &c).await; // b waits for c
    assert_err(
        &srv.post(
            &format!("/api/tasks/{c}/dependencies"),
            json!({"depends_on_task_id": a.clone()}),
        )
        .await,
        409,
        "dependency_cycle",
    );
    // A diamond is not a cycle.
    srv.add_dep(&a, &c).await;
    assert_eq!(srv.detail(&a).await["summary"]["dependency_count"], 2);
    assert_eq!(
        srv.events(&c).await.len(),
        1,
        "refused edges record nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_32_edges_per_task() {
    let srv = Server::start();
    let tid = srv.task("hub").await;
    let mut blockers = Vec::new();
    for i in 0..33 {
        blockers.push(srv.task(&format!("blocker {i}")).await);
    }
    for b in &blockers[..32] {
        srv.add_dep(&tid, b).await;
    }
    assert_err(
        &srv.post(
            &format!("/api/tasks/{tid}/dependencies"),
            json!({"depends_on_task_id": blockers[32].clone()}),
        )
        .await,
        409,
        "graph_limit_exceeded",
    );
    let d = srv.detail(&tid).await;
    assert_eq!(d["summary"]["dependency_count"], 32);
    // Dependencies are listed oldest first.
    let listed: Vec<&str> = d["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["depends_on_task_id"].as_str().unwrap())
        .collect();
    let expect: Vec<&str> = blockers[..32].iter().map(String::as_str).collect();
    assert_eq!(listed, expect);
    // The limit counts edges of the dependent, not of the blocker: the blocker can have many dependents.
    let other = srv.task("other").await;
    srv.add_dep(&other, &blockers[0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_dependency_unblocks() {
    let srv = Server::start();
    let blocker = srv.task("blocker").await;
    let tid = srv.task("dependent").await;
    srv.add_dep(&tid, &blocker).await;
    let (s, v) = srv
        .delete(&format!("/api/tasks/{tid}/dependencies/{blocker}"))
        .await;
    assert_status(&(s, v.clone()), 200);
    assert_eq!(v["task"]["task"]["status"], "ready");
    assert!(
        v["task"].get("dependencies").is_none()
            || v["task"]["dependencies"].as_array().unwrap().is_empty()
    );
    assert!(srv.list_ids("status=ready").await.contains(&tid));
    let ev = srv.events(&tid).await;
    let removed = only_event(&ev, "task.dependency_removed");
    assert_eq!(
        removed["payload"],
        json!({"depends_on_task_id": blocker.clone(), "kind": "blocks", "status": "ready"})
    );
    assert_eq!(removed["origin"], http_origin("remove_dependency"));
    // Removing never enqueues.
    assert!(srv.runs(&tid, "").await.is_empty());
    assert_err(
        &srv.delete(&format!("/api/tasks/{tid}/dependencies/{blocker}"))
            .await,
        404,
        "dependency_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_completed_blockers_resolve() {
    let srv = Server::start();
    // Failed and canceled blockers block for ever; drafts block.
    let failed = id(&srv.task_with("failing", json!({"max_attempts": 1})).await);
    let canceled = srv.task("canceled").await;
    let draft = id(&srv.task_with("draft", json!({"draft": true})).await);
    let d1 = srv.task("d1").await;
    let d2 = srv.task("d2").await;
    let d3 = srv.task("d3").await;
    srv.add_dep(&d1, &failed).await;
    srv.add_dep(&d2, &canceled).await;
    srv.add_dep(&d3, &draft).await;
    srv.fail_task_once(&failed, "boom").await;
    srv.post_empty(&format!("/api/tasks/{canceled}/cancel"))
        .await;
    for d in [&d1, &d2, &d3] {
        assert_eq!(srv.status_of(d).await, "blocked", "{d}");
    }

    // A blocker that completes resolves; running it again re-blocks the dependent.
    let blocker = srv.task("blocker").await;
    let dep = srv.task("dep").await;
    srv.add_dep(&dep, &blocker).await;
    let rid = srv.running_run(&blocker).await;
    assert_eq!(
        srv.status_of(&dep).await,
        "blocked",
        "in_progress blocker still blocks"
    );
    srv.complete_run(&rid, None).await;
    assert_eq!(srv.status_of(&dep).await, "ready");
    srv.enqueue(&blocker).await;
    assert_eq!(srv.status_of(&blocker).await, "ready");
    assert_eq!(srv.status_of(&dep).await, "blocked");
    assert!(srv.list_ids("status=blocked").await.contains(&dep));

    // Workspace tasks may depend on global or other-workspace tasks.
    let ws = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "w9", "title": "ws dep"}))
        .await);
    srv.add_dep(&ws, &blocker).await;
    assert_eq!(srv.status_of(&ws).await, "blocked");
}

#[tokio::test(flavor = "multi_thread")]
async fn dependents_are_reconciled_and_persisted_through_a_chain() {
    // a <- b <- c (b waits for a, c waits for b); the stored status (used by the list filter) must
    // always equal the derived one.
    let srv = Server::start();
    let a = srv.task("a").await;
    let b = srv.task("b").await;
    let c = srv.task("c").await;
    srv.add_dep(&b, &a).await;
    srv.add_dep(&c, &b).await;
    let blocked = |srv: &Server| {
        let srv = srv.api.clone();
        async move {
            let mut v = srv.list_ids("status=blocked").await;
            v.sort();
            v
        }
    };
    let mut bc = vec![b.clone(), c.clone()];
    bc.sort();
    assert_eq!(blocked(&srv).await, bc);

    srv.complete_task(&a).await;
    assert_eq!(srv.status_of(&b).await, "ready");
    assert_eq!(srv.status_of(&c).await, "blocked");
    assert_eq!(blocked(&srv).await, vec![c.clone()]);
    assert!(srv.list_ids("status=ready").await.contains(&b));

    srv.complete_task(&b).await;
    assert_eq!(srv.status_of(&c).await, "ready");
    assert!(blocked(&srv).await.is_empty());
    assert!(srv.list_ids("status=ready").await.contains(&c));
    let ready_c = srv
        .list("status=ready")
        .await
        .into_iter()
        .find(|t| t["id"] == c.as_str())
        .unwrap();
    assert_eq!(
        ready_c["dependencies"][0]["depends_on"]["status"],
        "completed"
    );

    // Re-running b re-blocks c, and the list filter sees it at once.
    srv.enqueue(&b).await;
    assert_eq!(blocked(&srv).await, vec![c.clone()]);

    // Reconciling dependents records no event on them.
    let types = srv.event_types(&c).await;
    assert_eq!(types, vec!["task.created", "task.dependency_added"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_blocker_unblocks_its_dependents() {
    let srv = Server::start();
    let blocker = srv.task("blocker").await;
    let d1 = srv.task("d1").await;
    let d2 = srv.task("d2").await;
    srv.add_dep(&d1, &blocker).await;
    srv.add_dep(&d2, &blocker).await;
    assert_eq!(srv.delete(&format!("/api/tasks/{blocker}")).await.0, 204);
    for d in [&d1, &d2] {
        let det = srv.detail(d).await;
        assert_eq!(det["task"]["status"], "ready");
        assert!(
            det["summary"].get("dependency_count").is_none()
                || det["summary"]["dependency_count"] == 0
        );
        assert_eq!(
            count_events(&srv.events(d).await, "task.dependency_removed"),
            0
        );
    }
    let mut ready = srv.list_ids("status=ready").await;
    ready.sort();
    let mut expect = vec![d1, d2];
    expect.sort();
    assert_eq!(ready, expect);
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_enqueue_on_ready_fires_once_on_the_operator_path() {
    let srv = Server::start();
    let a1 = srv.task("a1").await;
    let a2 = srv.task("a2").await;
    let auto = id(&srv
        .task_with("auto", json!({"auto_enqueue_on_ready": true}))
        .await);
    let manual = srv.task("not auto").await;
    srv.add_dep(&auto, &a1).await;
    srv.add_dep(&auto, &a2).await;
    srv.add_dep(&manual, &a1).await;
    srv.add_dep(&manual, &a2).await;

    srv.complete_task(&a1).await;
    assert!(srv.runs(&auto, "").await.is_empty(), "still blocked by a2");
    srv.complete_task(&a2).await;
    let runs = srv.runs(&auto, "").await;
    assert_eq!(runs.len(), 1, "exactly one auto-enqueued run: {runs:?}");
    assert_eq!(runs[0]["status"], "queued");
    assert_eq!(runs[0]["attempt"], 1);
    assert_eq!(srv.status_of(&auto).await, "ready");
    assert_eq!(
        count_events(&srv.events(&auto).await, "task.run_enqueued"),
        1
    );
    assert!(
        srv.runs(&manual, "").await.is_empty(),
        "no auto flag, no run"
    );
    assert_eq!(srv.status_of(&manual).await, "ready");

    // Running a blocker again (dependent already has an open run) adds nothing.
    srv.complete_task(&a1).await;
    assert_eq!(srv.runs(&auto, "").await.len(), 1);
    // The auto-enqueued run is claimable.
    srv.claim(&id(&runs[0])).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_enqueue_on_ready_fires_on_the_agent_path() {
    let srv = Server::start();
    let blocker = id(&srv
        .task_with("blocker", json!({"priority": "urgent"}))
        .await);
    let auto = id(&srv
        .task_with("auto", json!({"auto_enqueue_on_ready": true}))
        .await);
    srv.add_dep(&auto, &blocker).await;
    srv.enqueue(&blocker).await;

    let (s, v) = srv
        .post_as("agent-1", "/api/agent/tasks/claim-next", json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let run_id = str_of(&v["claim"]["run"], "id");
    assert_eq!(v["claim"]["run"]["task_id"], blocker.as_str());
    let (s, v) = srv
        .post_as(
            "agent-1",
            &format!("/api/agent/tasks/{run_id}/complete"),
            json!({"result": {"ok": 1}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(srv.status_of(&blocker).await, "completed");
    let runs = srv.runs(&auto, "").await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "queued");
    assert_eq!(srv.status_of(&auto).await, "ready");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_enqueue_is_exactly_once_under_concurrent_completions() {
    let srv = Server::start();
    for round in 0..3 {
        let blockers: Vec<String> = {
            let mut v = Vec::new();
            for i in 0..4 {
                v.push(srv.task(&format!("r{round} blocker {i}")).await);
            }
            v
        };
        let auto = id(&srv
            .task_with(
                &format!("r{round} auto"),
                json!({"auto_enqueue_on_ready": true}),
            )
            .await);
        for b in &blockers {
            srv.add_dep(&auto, b).await;
        }
        let mut runs = Vec::new();
        for b in &blockers {
            runs.push(srv.running_run(b).await);
        }
        let futs = runs.iter().map(|rid| {
            let api = srv.api.clone();
            let rid = rid.clone();
            tokio::spawn(async move {
                api.post(&format!("/api/task-runs/{rid}/complete"), json!({}))
                    .await
            })
        });
        for r in futures::future::join_all(futs).await {
            let (s, v) = r.unwrap();
            assert_eq!(s, 200, "{v}");
        }
        let auto_runs = srv.runs(&auto, "").await;
        assert_eq!(auto_runs.len(), 1, "round {round}: {auto_runs:?}");
        assert_eq!(
            count_events(&srv.events(&auto).await, "task.run_enqueued"),
            1
        );
    }
}
