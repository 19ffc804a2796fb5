//! Events: every event type and its payload, actor and origin, sequence ordering, and the order
//! of a task detail's events.
mod common;
use common::*;

/// The payload of the only event of `event_type` in the task's events.
async fn payload(srv: &Server, task: &str, event_type: &str) -> Value {
    let ev = srv.events(task).await;
    only_event(&ev, event_type)["payload"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn created_event_payloads() {
    let srv = Server::start();
    let plain = srv.task("plain").await;
    let ev = srv.events(&plain).await;
    assert_eq!(ev.len(), 1);
    let e = &ev[0];
    assert_eq!(e["event_type"], "task.created");
    assert_eq!(e["task_id"], plain.as_str());
    assert!(str_of(e, "id").starts_with("evt-"), "{e}");
    assert_absent(e, "run_id");
    assert_eq!(e["actor"], human());
    assert_eq!(e["origin"], http_origin("create"));
    assert_present(e, "timestamp");
    assert_eq!(e["payload"], json!({"scope": "global", "status": "ready"}));

    let full = id(&srv
        .create_task(json!({
            "scope": "workspace", "workspace": "ws1", "title": "full",
            "network_channel": "chan", "owner": {"kind": "pool", "ref": "p1"},
            "approval_policy": "manual"
        }))
        .await);
    assert_eq!(
        payload(&srv, &full, "task.created").await,
        json!({"scope": "workspace", "workspace_id": "ws1", "status": "blocked",
               "network_channel": "chan", "owner": {"kind": "pool", "ref": "p1"}})
    );
    let draft = id(&srv.task_with("draft", json!({"draft": true})).await);
    assert_eq!(
        payload(&srv, &draft, "task.created").await["status"],
        "draft"
    );

    let child = srv.child(&plain, "kid").await;
    assert_eq!(
        payload(&srv, &child, "task.created").await,
        json!({"scope": "global", "parent_task_id": plain.clone(), "status": "ready"})
    );
    assert_eq!(
        payload(&srv, &plain, "task.child_created").await,
        json!({"child_task_id": child.clone(), "child_scope": "global"})
    );
    // Child's task.created precedes the parent's task.child_created in the global sequence.
    let child_seq = srv.latest_seq(&child).await;
    let cc_seq = srv.latest_seq(&plain).await;
    assert_eq!(
        cc_seq,
        child_seq + 1,
        "child_created is recorded right after the child's created"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_approve_reject_payloads() {
    let srv = Server::start();
    let d = id(&srv.task_with("d", json!({"draft": true})).await);
    srv.post_empty(&format!("/api/tasks/{d}/publish")).await;
    assert_eq!(
        payload(&srv, &d, "task.published").await,
        json!({"previous_status": "draft", "status": "ready", "approval_state": "not_required"})
    );
    let tl = srv.events(&d).await;
    let types: Vec<&str> = tl
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["task.created", "task.published", "task.run_enqueued"]
    );
    for e in &tl[1..] {
        assert_eq!(e["origin"], http_origin("publish"));
        assert_eq!(e["actor"], human());
    }

    let a = id(&srv
        .task_with("a", json!({"approval_policy": "manual"}))
        .await);
    srv.post_empty(&format!("/api/tasks/{a}/approve")).await;
    assert_eq!(
        payload(&srv, &a, "task.approved").await,
        json!({"previous_approval_state": "pending", "approval_state": "approved", "status": "ready"})
    );
    let tl = srv.events(&a).await;
    let types: Vec<&str> = tl
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["task.created", "task.approved", "task.run_enqueued"]
    );
    for e in &tl[1..] {
        assert_eq!(e["origin"], http_origin("approve"));
    }

    let r = id(&srv
        .task_with("r", json!({"approval_policy": "manual"}))
        .await);
    srv.post_empty(&format!("/api/tasks/{r}/reject")).await;
    let ev = srv.events(&r).await;
    let rej = only_event(&ev, "task.rejected");
    assert_eq!(
        rej["payload"],
        json!({"previous_approval_state": "pending", "approval_state": "rejected", "status": "blocked"})
    );
    assert_eq!(rej["origin"], http_origin("reject"));

    // start (task) records only task.run_enqueued.
    let s = srv.task("s").await;
    srv.post_empty(&format!("/api/tasks/{s}/start")).await;
    let types = srv.event_types(&s).await;
    assert_eq!(types, vec!["task.created", "task.run_enqueued"]);
    let ev = srv.events(&s).await;
    assert_eq!(
        only_event(&ev, "task.run_enqueued")["origin"],
        http_origin("start")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_lifecycle_payloads_from_claim_to_complete() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let run = srv.enqueue(&tid).await;
    let rid = id(&run);
    srv.claim(&rid).await;
    srv.start_run(&rid).await;
    srv.complete_run(&rid, Some(json!({"out": "done"}))).await;

    let tl = srv.events(&tid).await;
    let types: Vec<&str> = tl
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "task.created",
            "task.run_enqueued",
            "task.run_claimed",
            "task.run_starting",
            "task.run_started",
            "task.run_completed"
        ],
        "start from claimed records run_starting then run_started"
    );
    let ev = srv.events(&tid).await;
    for e in ev.iter().filter(|e| e["event_type"] != "task.created") {
        assert_eq!(e["run_id"], rid.as_str(), "run events carry run_id: {e}");
        assert_eq!(e["actor"], human());
    }
    let origin_of = |t: &str| only_event(&ev, t)["origin"].clone();
    assert_eq!(origin_of("task.run_enqueued"), http_origin("enqueue_run"));
    assert_eq!(origin_of("task.run_claimed"), http_origin("claim_run"));
    assert_eq!(origin_of("task.run_starting"), http_origin("start_run"));
    assert_eq!(origin_of("task.run_started"), http_origin("start_run"));
    assert_eq!(origin_of("task.run_completed"), http_origin("complete_run"));

    let p = |t: &str| only_event(&ev, t)["payload"].clone();
    assert_eq!(
        p("task.run_enqueued"),
        json!({"attempt": 1, "status": "queued", "task_status": "ready"})
    );
    assert_eq!(
        p("task.run_claimed"),
        json!({"status": "claimed", "task_status": "ready", "claimed_by": human(),
               "lease_until": "0001-01-01T00:00:00Z"})
    );
    assert_eq!(
        p("task.run_starting"),
        json!({"status": "starting", "task_status": "in_progress"})
    );
    assert_eq!(
        p("task.run_started"),
        json!({"status": "running", "task_status": "in_progress"})
    );
    assert_eq!(
        p("task.run_completed"),
        json!({"status": "completed", "task_status": "completed", "result": {"out": "done"}})
    );
    assert_eq!(
        count_events(&ev, "task.run_session_bound"),
        0,
        "no session, no binding event"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn enqueue_payload_optional_fields() {
    let srv = Server::start();
    let ws = id(&srv
        .create_task(json!({"scope": "workspace", "workspace": "ws1", "title": "w", "network_channel": "team"}))
        .await);
    let rid = id(&srv
        .post(
            &format!("/api/tasks/{ws}/runs"),
            json!({"idempotency_key": "key-1"}),
        )
        .await
        .1["run"]);
    let p = payload(&srv, &ws, "task.run_enqueued").await;
    assert_eq!(
        p,
        json!({"attempt": 1, "status": "queued", "task_status": "ready", "network_channel": "team",
               "coordination_channel_id": "team", "idempotency_key": "key-1"})
    );
    // An idempotent replay records nothing.
    srv.post(
        &format!("/api/tasks/{ws}/runs"),
        json!({"idempotency_key": "key-1"}),
    )
    .await;
    assert_eq!(count_events(&srv.events(&ws).await, "task.run_enqueued"), 1);
    let _ = rid;

    // A blocked task's enqueue reports task_status blocked.
    let gated = id(&srv
        .task_with("g", json!({"approval_policy": "manual"}))
        .await);
    srv.enqueue(&gated).await;
    assert_eq!(
        payload(&srv, &gated, "task.run_enqueued").await["task_status"],
        "blocked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_bound_and_started_payloads() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    srv.claim(&rid).await;
    srv.post(
        &format!("/api/task-runs/{rid}/attach-session"),
        json!({"session_id": "sess-1"}),
    )
    .await;
    srv.start_run(&rid).await;
    let ev = srv.events(&tid).await;
    let bound = only_event(&ev, "task.run_session_bound");
    assert_eq!(
        bound["payload"],
        json!({"status": "starting", "task_status": "in_progress", "session_id": "sess-1"})
    );
    assert_eq!(bound["origin"], http_origin("attach_run_session"));
    assert_eq!(
        only_event(&ev, "task.run_started")["payload"],
        json!({"status": "running", "task_status": "in_progress", "session_id": "sess-1"})
    );
    assert_eq!(
        count_events(&ev, "task.run_starting"),
        0,
        "start from starting records only run_started"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_and_canceled_payloads() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = srv.running_run(&tid).await;
    srv.post(
        &format!("/api/task-runs/{rid}/fail"),
        json!({"error": "boom", "metadata": {"code": 3}}),
    )
    .await;
    let ev = srv.events(&tid).await;
    let f = only_event(&ev, "task.run_failed");
    assert_eq!(
        f["payload"],
        json!({"status": "failed", "task_status": "ready", "error": "boom", "metadata": {"code": 3}})
    );
    assert_eq!(f["origin"], http_origin("fail_run"));

    // Exhausted: task_status failed.
    let one = id(&srv.task_with("one", json!({"max_attempts": 1})).await);
    srv.fail_task_once(&one, "bad").await;
    assert_eq!(
        payload(&srv, &one, "task.run_failed").await,
        json!({"status": "failed", "task_status": "failed", "error": "bad"})
    );

    // Plain run cancel: task_status after the mutation (canceled).
    let c = srv.task("c").await;
    let crid = id(&srv.enqueue(&c).await);
    srv.post(
        &format!("/api/task-runs/{crid}/cancel"),
        json!({"reason": "stop", "metadata": {"x": 1}}),
    )
    .await;
    let ev = srv.events(&c).await;
    let rc = only_event(&ev, "task.run_canceled");
    assert_eq!(
        rc["payload"],
        json!({"status": "canceled", "task_status": "canceled", "reason": "stop", "metadata": {"x": 1}})
    );
    assert_eq!(rc["origin"], http_origin("cancel_run"));
    assert_eq!(rc["run_id"], crid.as_str());

    // Task cancel: the run's task_status is the task's status before it became canceled.
    let tc = srv.task("tc").await;
    srv.enqueue(&tc).await;
    srv.post(&format!("/api/tasks/{tc}/cancel"), json!({"reason": "r"}))
        .await;
    let ev = srv.events(&tc).await;
    let rc = only_event(&ev, "task.run_canceled");
    assert_eq!(rc["payload"]["status"], "canceled");
    assert_eq!(rc["payload"]["task_status"], "ready");
    assert_eq!(rc["payload"]["reason"], "r");
    assert_eq!(rc["origin"], http_origin("cancel"));
    let tcanc = only_event(&ev, "task.canceled");
    assert_eq!(tcanc["payload"]["status"], "canceled");
    assert_eq!(tcanc["payload"]["reason"], "r");
    assert_eq!(
        tcanc["payload"]["canceled_run_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_session_actor_is_recorded() {
    let srv = Server::start();
    let (s, v) = srv
        .post_as(
            "sess-42",
            "/api/tasks",
            json!({"scope": "global", "title": "by agent"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let tid = id(&v["task"]);
    assert_eq!(v["task"]["created_by"], owner("agent_session", "sess-42"));
    assert_eq!(v["task"]["origin"], http_origin("create"));
    // A human edits it: the created_by stays, the event actor is the human.
    srv.patch(&format!("/api/tasks/{tid}"), json!({"title": "edited"}))
        .await;
    // Another session edits it.
    let (s, _) = srv
        .call(
            Method::PATCH,
            &format!("/api/tasks/{tid}"),
            Some(json!({"priority": "low"})),
            &agent("sess-7"),
        )
        .await;
    assert_eq!(s, 200);
    let ev = srv.events(&tid).await;
    assert_eq!(ev[0]["event_type"], "task.created");
    assert_eq!(ev[0]["actor"], owner("agent_session", "sess-42"));
    let updates: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event_type"] == "task.updated")
        .collect();
    assert_eq!(updates.len(), 2);
    let actors: Vec<Value> = updates.iter().map(|e| e["actor"].clone()).collect();
    assert!(actors.contains(&human()));
    assert!(actors.contains(&owner("agent_session", "sess-7")));
    for e in &updates {
        assert_eq!(e["origin"], http_origin("update"));
    }
    assert_eq!(
        srv.get_task(&tid).await["created_by"],
        owner("agent_session", "sess-42")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sequences_are_global_strictly_increasing_and_match_timestamps() {
    let srv = Server::start();
    let a = srv.task("a").await;
    let b = srv.task("b").await;
    // Interleave writes on two tasks.
    let ra = id(&srv.enqueue(&a).await);
    let rb = id(&srv.enqueue(&b).await);
    srv.claim(&ra).await;
    srv.claim(&rb).await;
    srv.start_run(&ra).await;
    srv.complete_run(&ra, None).await;
    srv.patch(&format!("/api/tasks/{b}"), json!({"title": "b2"}))
        .await;

    let ta = srv.timeline(&a, "").await;
    let tb = srv.timeline(&b, "").await;
    let mut all: Vec<(i64, String, String)> = Vec::new();
    for tl in [&ta, &tb] {
        let seqs: Vec<i64> = tl.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "per-task timeline strictly increasing: {seqs:?}"
        );
        for e in tl.iter() {
            assert!(e["sequence"].as_i64().unwrap() > 0);
            all.push((
                e["sequence"].as_i64().unwrap(),
                str_of(e, "timestamp"),
                str_of(e, "event_type"),
            ));
            assert_present(e, "event_id");
            assert_present(&e["task"], "id");
        }
    }
    all.sort();
    let seqs: Vec<i64> = all.iter().map(|x| x.0).collect();
    let mut dedup = seqs.clone();
    dedup.dedup();
    assert_eq!(seqs, dedup, "sequences are unique across tasks");
    // Timestamps never disagree with the sequence.
    assert!(
        all.windows(2).all(|w| w[0].1 <= w[1].1),
        "timestamps must be non-decreasing in sequence order: {all:#?}"
    );
    // Interleaving is visible in the global order: b's created comes after a's created.
    assert!(ta[0]["sequence"].as_i64() < tb[0]["sequence"].as_i64());

    // latest_event_seq is the task's highest sequence.
    let last_a = ta.last().unwrap()["sequence"].as_i64().unwrap();
    assert_eq!(
        srv.get_task(&a).await["latest_event_seq"].as_i64().unwrap(),
        last_a
    );
    assert_eq!(
        srv.detail(&a).await["summary"]["latest_event_seq"]
            .as_i64()
            .unwrap(),
        last_a
    );
    // The timeline item's run is the run's current state; task-level items have none.
    let done = ta
        .iter()
        .find(|e| e["event_type"] == "task.run_completed")
        .unwrap();
    assert_eq!(done["run"]["id"], ra.as_str());
    assert_eq!(done["run"]["status"], "completed");
    assert!(ta[0].get("run").is_none() || ta[0]["run"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn detail_events_are_newest_first_and_complete() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    srv.patch(&format!("/api/tasks/{tid}"), json!({"title": "t2"}))
        .await;
    let d = id(&srv.task_with("draft", json!({"draft": true})).await);
    let (_, published) = srv.post_empty(&format!("/api/tasks/{d}/publish")).await;
    srv.complete_task(&tid).await;
    let drun = id(&published["run"]);
    srv.claim(&drun).await;
    srv.start_run(&drun).await;
    srv.complete_run(&drun, None).await;

    for task in [&tid, &d] {
        let newest_first = srv.events_newest_first(task).await;
        let ts: Vec<String> = newest_first
            .iter()
            .map(|e| str_of(e, "timestamp"))
            .collect();
        assert!(ts.windows(2).all(|w| w[0] >= w[1]), "{ts:?}");
        let last = newest_first[0].clone();
        let types: Vec<String> = newest_first
            .iter()
            .map(|e| str_of(e, "event_type"))
            .collect();
        assert_eq!(types.last().unwrap(), "task.created", "{types:?}");
        assert_eq!(last["event_type"], "task.run_completed", "{types:?}");
        let tl = srv.timeline(task, "").await;
        assert_eq!(newest_first.len(), tl.len(), "detail lists all events");
        let detail_ids: Vec<String> = newest_first.iter().map(|e| str_of(e, "id")).collect();
        let mut timeline_ids: Vec<String> = tl.iter().map(|e| str_of(e, "event_id")).collect();
        timeline_ids.reverse();
        assert_eq!(
            detail_ids, timeline_ids,
            "detail events are the timeline, newest first"
        );
        let ts: Vec<String> = newest_first
            .iter()
            .map(|e| str_of(e, "timestamp"))
            .collect();
        assert!(ts.windows(2).all(|w| w[0] >= w[1]), "{ts:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timeline_paging() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    srv.complete_task(&tid).await; // created, enqueued, claimed, starting, started, completed
    let all = srv.timeline(&tid, "").await;
    assert_eq!(all.len(), 6);
    let seqs: Vec<i64> = all
        .iter()
        .map(|e| e["sequence"].as_i64().unwrap())
        .collect();
    let page1 = srv.timeline(&tid, "limit=3").await;
    assert_eq!(
        page1
            .iter()
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        seqs[..3]
    );
    let page2 = srv
        .timeline(&tid, &format!("after_sequence={}&limit=10", seqs[2]))
        .await;
    assert_eq!(
        page2
            .iter()
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        seqs[3..]
    );
    assert!(srv
        .timeline(&tid, &format!("after_sequence={}", seqs[5]))
        .await
        .is_empty());
    for q in ["after_sequence=-1", "limit=-1", "after_sequence=x"] {
        assert_err(
            &srv.get(&format!("/api/tasks/{tid}/timeline?{q}")).await,
            422,
            "validation_failed",
        );
    }
    assert_err(
        &srv.get("/api/tasks/nope/timeline").await,
        404,
        "task_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_and_refusals_record_no_events() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let blocker = srv.task("b").await;
    srv.get(&format!("/api/tasks/{tid}")).await;
    srv.get("/api/tasks").await;
    srv.get(&format!("/api/tasks/{tid}/runs")).await;
    srv.get(&format!("/api/tasks/{tid}/tree")).await;
    srv.post_empty(&format!("/api/tasks/{tid}/publish")).await; // 409
    srv.post_empty(&format!("/api/tasks/{tid}/approve")).await; // 409
    srv.patch(&format!("/api/tasks/{tid}"), json!({"max_attempts": 99}))
        .await; // 422
    srv.post(
        &format!("/api/tasks/{tid}/dependencies"),
        json!({"depends_on_task_id": tid.clone()}),
    )
    .await; // 422
    assert_eq!(srv.event_types(&tid).await, vec!["task.created"]);
    assert_eq!(srv.event_types(&blocker).await, vec!["task.created"]);
}
