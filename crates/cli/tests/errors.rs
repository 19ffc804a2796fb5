//! Error contract: statuses and codes, JSON decoding, empty bodies, enum normalization, size limits,
//! and "never 500 for client input".
mod common;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_bodies_are_400_invalid_json() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let bodies: Vec<&[u8]> = vec![
        b"{not json",
        b"[1, 2]",
        b"\"a string\"",
        b"42",
        b"null",
        b"{\"scope\": \"global\", \"title\": \"x\"",
        b"\xff\xfe{}",
    ];
    for body in &bodies {
        for (method, path) in [
            (Method::POST, "/api/tasks".to_string()),
            (Method::PATCH, format!("/api/tasks/{tid}")),
            (Method::POST, format!("/api/tasks/{tid}/runs")),
            (Method::POST, format!("/api/tasks/{tid}/cancel")),
            (Method::POST, format!("/api/tasks/{tid}/dependencies")),
        ] {
            let r = srv
                .call_raw(
                    method.clone(),
                    &path,
                    body.to_vec(),
                    Some("application/json"),
                    &[],
                )
                .await;
            assert_err(&r, 400, "invalid_json");
        }
    }
    assert_eq!(srv.list("").await.len(), 1);
    assert_eq!(srv.events(&tid).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_field_types_are_400_invalid_json() {
    let srv = Server::start();
    for body in [
        json!({"scope": "global", "title": 5}),
        json!({"scope": 1, "title": "x"}),
        json!({"scope": "global", "title": "x", "max_attempts": "3"}),
        json!({"scope": "global", "title": "x", "draft": "yes"}),
        json!({"scope": "global", "title": "x", "owner": "alice"}),
        json!({"scope": "global", "title": "x", "priority": ["high"]}),
        json!({"scope": "global", "title": "x", "auto_enqueue_on_ready": 1}),
    ] {
        assert_err(
            &srv.post("/api/tasks", body.clone()).await,
            400,
            "invalid_json",
        );
    }
    let tid = srv.task("t").await;
    assert_err(
        &srv.patch(&format!("/api/tasks/{tid}"), json!({"title": ["x"]}))
            .await,
        400,
        "invalid_json",
    );
    assert_err(
        &srv.post(
            &format!("/api/tasks/{tid}/dependencies"),
            json!({"depends_on_task_id": 7}),
        )
        .await,
        400,
        "invalid_json",
    );
    assert_err(
        &srv.post(
            &format!("/api/tasks/{tid}/runs"),
            json!({"idempotency_key": 7}),
        )
        .await,
        400,
        "invalid_json",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validation_failures_are_422() {
    let srv = Server::start();
    for body in [
        json!({}),
        json!({"title": "no scope"}),
        json!({"scope": "global"}),
        json!({"scope": "global", "title": "   "}),
        json!({"scope": "galaxy", "title": "x"}),
        json!({"scope": "global", "title": "x", "priority": "extreme"}),
        json!({"scope": "global", "title": "x", "approval_policy": "always"}),
        json!({"scope": "global", "title": "x", "max_attempts": 0}),
        json!({"scope": "global", "title": "x", "max_attempts": 11}),
        json!({"scope": "global", "title": "x", "max_attempts": -1}),
        json!({"scope": "global", "title": "x", "network_channel": "Upper"}),
        json!({"scope": "global", "title": "x", "network_channel": "-lead"}),
        json!({"scope": "global", "title": "x", "network_channel": "has space"}),
        json!({"scope": "global", "title": "x", "network_channel": "a".repeat(65)}),
        json!({"scope": "global", "title": "x", "owner": {"kind": "robot", "ref": "r"}}),
        json!({"scope": "global", "title": "x", "owner": {"kind": "human", "ref": " "}}),
        json!({"scope": "global", "title": "x", "owner": {"kind": "", "ref": ""}}),
        json!({"scope": "global", "title": "x", "metadata": {"claim_token": "t"}}),
        json!({"scope": "global", "title": "x", "metadata": {"a": [{"b": {"claim_token": 1}}]}}),
        json!({"scope": "global", "title": "x", "required_capabilities": ["has space"]}),
        json!({"scope": "global", "title": "x", "required_capabilities": ["a,b"]}),
        json!({"scope": "global", "title": "x", "required_capabilities": [""]}),
        json!({"scope": "global", "title": "x", "preferred_capabilities": ["x".repeat(129)]}),
    ] {
        assert_err(
            &srv.post("/api/tasks", body.clone()).await,
            422,
            "validation_failed",
        );
    }
    // Boundaries that are fine.
    srv.task_with("x", json!({"max_attempts": 1})).await;
    srv.task_with("x", json!({"max_attempts": 10})).await;
    srv.task_with("x", json!({"max_attempts": null})).await;
    srv.task_with(
        "x",
        json!({"network_channel": format!("a{}", "b".repeat(63))}),
    )
    .await;
    srv.task_with("x", json!({"network_channel": "0_a-b"}))
        .await;
    assert_eq!(
        srv.list("").await.len(),
        5,
        "nothing was created by the refused requests"
    );

    // Bad query parameters on the list.
    for q in [
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "status=bogus",
        "priority=extreme",
        "scope=galaxy",
        "approval_state=maybe",
        "owner_kind=robot",
        "include_drafts=maybe",
        "scope=workspace",
        "scope=global&workspace=ws1",
        "network_channel=Bad%20Channel",
    ] {
        assert_err(
            &srv.get(&format!("/api/tasks?{q}")).await,
            422,
            "validation_failed",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found_codes() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    assert_err(
        &srv.get("/api/tasks/task-0000000000000000").await,
        404,
        "task_not_found",
    );
    assert_err(
        &srv.patch("/api/tasks/nope", json!({"title": "x"})).await,
        404,
        "task_not_found",
    );
    assert_err(&srv.delete("/api/tasks/nope").await, 404, "task_not_found");
    for action in ["publish", "approve", "reject", "start", "cancel", "runs"] {
        assert_err(
            &srv.post_empty(&format!("/api/tasks/nope/{action}")).await,
            404,
            "task_not_found",
        );
    }
    assert_err(
        &srv.get("/api/tasks/nope/runs").await,
        404,
        "task_not_found",
    );
    assert_err(
        &srv.get("/api/task-runs/run-0000000000000000").await,
        404,
        "run_not_found",
    );
    for action in ["claim", "start", "complete", "cancel"] {
        assert_err(
            &srv.post_empty(&format!("/api/task-runs/nope/{action}"))
                .await,
            404,
            "run_not_found",
        );
    }
    assert_err(
        &srv.delete(&format!("/api/tasks/{tid}/dependencies/nope"))
            .await,
        404,
        "dependency_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_post_body_is_an_empty_object() {
    let srv = Server::start();
    // Required fields missing: validation, not decoding.
    assert_err(
        &srv.post_empty("/api/tasks").await,
        422,
        "validation_failed",
    );
    let tid = srv.task("t").await;
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/children")).await,
        422,
        "validation_failed",
    );
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/dependencies"))
            .await,
        422,
        "validation_failed",
    );
    // Optional bodies: the operation just works.
    let (s, v) = srv.post_empty(&format!("/api/tasks/{tid}/runs")).await;
    assert_eq!(s, 201, "{v}");
    let rid = id(&v["run"]);
    assert_eq!(
        srv.post_empty(&format!("/api/task-runs/{rid}/claim"))
            .await
            .0,
        200
    );
    assert_eq!(
        srv.post_empty(&format!("/api/task-runs/{rid}/start"))
            .await
            .0,
        200
    );
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{rid}/fail")).await,
        422,
        "validation_failed",
    );
    assert_eq!(
        srv.post_empty(&format!("/api/task-runs/{rid}/complete"))
            .await
            .0,
        200
    );
    let t2 = srv.task("t2").await;
    assert_eq!(
        srv.post_empty(&format!("/api/tasks/{t2}/start")).await.0,
        201
    );
    assert_eq!(
        srv.post_empty(&format!("/api/tasks/{t2}/cancel")).await.0,
        200
    );
    let r = srv
        .call_raw(
            Method::POST,
            &format!("/api/task-runs/{rid}/attach-session"),
            vec![],
            None,
            &[],
        )
        .await;
    assert_eq!(r.0, 422, "{}", r.1);
    // An empty body with a JSON content type is also {}.
    let t3 = srv.task("t3").await;
    let r = srv
        .call_raw(
            Method::POST,
            &format!("/api/tasks/{t3}/runs"),
            vec![],
            Some("application/json"),
            &[],
        )
        .await;
    assert_eq!(r.0, 201, "{}", r.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn enum_inputs_are_normalized_everywhere() {
    let srv = Server::start();
    let t = srv
        .create_task(json!({
            "scope": " Global ", "title": "n", "priority": " High ",
            "approval_policy": " NONE ", "owner": {"kind": " POOL ", "ref": "p"}
        }))
        .await;
    assert_eq!(t["scope"], "global");
    assert_eq!(t["priority"], "high");
    assert_eq!(t["approval_policy"], "none");
    assert_eq!(t["owner"]["kind"], "pool");
    let tid = id(&t);
    let (s, v) = srv
        .patch(&format!("/api/tasks/{tid}"), json!({"priority": "LOW "}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["task"]["priority"], "low");
    let b = srv.task("b").await;
    let (s, v) = srv
        .post(
            &format!("/api/tasks/{tid}/dependencies"),
            json!({"depends_on_task_id": b, "kind": "Blocks"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Query enums too.
    assert_eq!(srv.list_ids("status=BLOCKED").await, vec![tid.clone()]);
    assert_eq!(srv.list_ids("priority=%20Low%20").await, vec![tid.clone()]);
    assert_eq!(srv.list_ids("owner_kind=Pool").await, vec![tid.clone()]);
    assert!(srv.runs(&tid, "status=QUEUED").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn size_limits_are_413() {
    let srv = Server::start();
    // Task metadata: 16 KiB.
    assert_err(
        &srv.post(
            "/api/tasks",
            json!({"scope": "global", "title": "m", "metadata": {"b": blob(17 * 1024)}}),
        )
        .await,
        413,
        "payload_too_large",
    );
    let t = srv
        .task_with("m", json!({"metadata": {"b": blob(15 * 1024)}}))
        .await;
    let tid = id(&t);
    assert_err(
        &srv.patch(
            &format!("/api/tasks/{tid}"),
            json!({"metadata": {"b": blob(17 * 1024)}}),
        )
        .await,
        413,
        "payload_too_large",
    );
    assert_err(
        &srv.post(
            &format!("/api/tasks/{tid}/children"),
            json!({"scope": "global", "title": "c", "metadata": {"b": blob(17 * 1024)}}),
        )
        .await,
        413,
        "payload_too_large",
    );
    // Run metadata on start/publish/approve: 16 KiB.
    assert_err(
        &srv.post(
            &format!("/api/tasks/{tid}/start"),
            json!({"metadata": {"b": blob(17 * 1024)}}),
        )
        .await,
        413,
        "payload_too_large",
    );
    assert!(srv.runs(&tid, "").await.is_empty());
    // Descriptions have no limit of their own: 3 MiB in a body under 4 MiB is fine.
    let big = srv
        .task_with("big", json!({"description": blob(3 * 1024 * 1024)}))
        .await;
    assert_eq!(
        srv.get_task(&id(&big)).await["description"]
            .as_str()
            .unwrap()
            .len(),
        3 * 1024 * 1024
    );
    // Bodies over 4 MiB are refused.
    let r = srv
        .post(
            "/api/tasks",
            json!({"scope": "global", "title": "huge", "description": blob(4 * 1024 * 1024 + 100)}),
        )
        .await;
    assert_err(&r, 413, "payload_too_large");
    assert_eq!(srv.list("query=huge").await.len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_fields_are_ignored() {
    let srv = Server::start();
    let t = srv
        .task_with(
            "u",
            json!({"unknown": 1, "status": "completed", "created_at": "x", "latest_event_seq": 99}),
        )
        .await;
    assert_eq!(t["status"], "ready");
    let tid = id(&t);
    let (s, _) = srv
        .patch(
            &format!("/api/tasks/{tid}"),
            json!({"title": "v", "bogus": true}),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn conflict_codes() {
    // One compact pass over the 409 codes (each is also covered in its own area).
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/runs")).await,
        409,
        "open_run_exists",
    );
    assert_err(
        &srv.post_empty(&format!("/api/task-runs/{rid}/start")).await,
        409,
        "invalid_transition",
    );
    assert_err(
        &srv.post_empty(&format!("/api/tasks/{tid}/publish")).await,
        409,
        "invalid_transition",
    );
    let a = srv.task("a").await;
    srv.add_dep(&tid, &a).await;
    assert_err(
        &srv.post(
            &format!("/api/tasks/{tid}/dependencies"),
            json!({"depends_on_task_id": a.clone()}),
        )
        .await,
        409,
        "duplicate_dependency",
    );
    assert_err(
        &srv.post(
            &format!("/api/tasks/{a}/dependencies"),
            json!({"depends_on_task_id": tid.clone()}),
        )
        .await,
        409,
        "dependency_cycle",
    );
    assert_err(
        &srv.post(
            "/api/tasks",
            json!({"id": tid.clone(), "scope": "global", "title": "dup"}),
        )
        .await,
        409,
        "duplicate_task",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_inputs_never_cause_a_server_error() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let rid = id(&srv.enqueue(&tid).await);
    let deep_array = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_meta = format!(
        "{{\"scope\":\"global\",\"title\":\"x\",\"metadata\":{}1{}}}",
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{}".to_vec(),
        b"null".to_vec(),
        b"{\"max_attempts\": 1e309}".to_vec(),
        b"{\"max_attempts\": 99999999999999999999999}".to_vec(),
        b"{\"max_attempts\": 2.5}".to_vec(),
        b"{\"lease_seconds\": -1, \"limit\": -5}".to_vec(),
        b"{\"title\": \"\\u0000\", \"scope\": \"global\"}".to_vec(),
        b"{\"title\": \"\\ud800\", \"scope\": \"global\"}".to_vec(),
        b"{\"scope\": \"workspace\", \"workspace\": \"../../etc\", \"title\": \"x\"}".to_vec(),
        b"{\"id\": \"a/b?c#d\", \"scope\": \"global\", \"title\": \"x\"}".to_vec(),
        b"{\"owner\": {}, \"scope\": \"global\", \"title\": \"x\"}".to_vec(),
        b"{\"owner\": null, \"clear_owner\": \"yes\"}".to_vec(),
        b"{\"depends_on_task_id\": \"\\u0000\"}".to_vec(),
        b"{\"session_id\": {\"a\": 1}}".to_vec(),
        b"{\"error\": null}".to_vec(),
        b"{\"result\": 1e400}".to_vec(),
        deep_array.into_bytes(),
        deep_meta.into_bytes(),
    ];
    let targets: Vec<(Method, String)> = vec![
        (Method::POST, "/api/tasks".into()),
        (Method::PATCH, format!("/api/tasks/{tid}")),
        (Method::POST, format!("/api/tasks/{tid}/children")),
        (Method::POST, format!("/api/tasks/{tid}/dependencies")),
        (Method::POST, format!("/api/tasks/{tid}/publish")),
        (Method::POST, format!("/api/tasks/{tid}/approve")),
        (Method::POST, format!("/api/tasks/{tid}/start")),
        (Method::POST, format!("/api/tasks/{tid}/runs")),
        (Method::POST, format!("/api/task-runs/{rid}/claim")),
        (Method::POST, format!("/api/task-runs/{rid}/attach-session")),
        (Method::POST, format!("/api/task-runs/{rid}/fail")),
        (Method::POST, format!("/api/task-runs/{rid}/complete")),
        (Method::POST, "/api/task-runs/nope/complete".into()),
        (Method::POST, "/api/tasks/%00/runs".into()),
    ];
    for (method, path) in &targets {
        for body in &bodies {
            let (s, v) = srv
                .call_raw(
                    method.clone(),
                    path,
                    body.clone(),
                    Some("application/json"),
                    &[],
                )
                .await;
            assert!(
                s.as_u16() < 500,
                "{method} {path} with {:?}: {s} {v}",
                String::from_utf8_lossy(&body[..body.len().min(80)])
            );
        }
    }
    for q in [
        "/api/tasks?limit=99999999999999999999999",
        "/api/tasks?query=%25%5F%27%22%3B--",
        "/api/tasks?query=%00",
        "/api/tasks?workspace=%ff",
        "/api/tasks/%E2%80%AE/runs?limit=1e9",
        "/api/tasks/..%2F..%2Fetc%2Fpasswd",
        "/api/task-runs/%00",
    ] {
        let (s, v) = srv.get(q).await;
        assert!(s.as_u16() < 500, "GET {q}: {s} {v}");
    }
    // The server is still healthy and its data intact.
    assert_eq!(srv.get_run(&rid).await["task_id"], tid.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_and_methods_answer_in_the_error_shape() {
    let srv = Server::start();
    let (s, v) = srv.call(Method::GET, "/api/no-such-thing", None, &[]).await;
    assert_eq!(s.as_u16(), 404, "{v}");
    assert_eq!(v["code"], "not_found", "{v}");
    let (s, v) = srv.call(Method::PUT, "/api/tasks", None, &[]).await;
    assert_eq!(s.as_u16(), 405, "{v}");
    assert_eq!(v["code"], "method_not_allowed", "{v}");
}
