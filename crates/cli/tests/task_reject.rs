//! `POST /api/tasks/{id}/reject` with an optional reason (Tasklane extension): without a body it
//! behaves as the reference; a reason lands in the `task.rejected` event and on the timeline.

mod common;

use common::*;

async fn pending(srv: &Server, title: &str) -> String {
    id(&srv
        .task_with(title, json!({"approval_policy": "manual"}))
        .await)
}

fn reject_path(task: &str) -> String {
    format!("/api/tasks/{task}/reject")
}

/// The payload of the task's one `task.rejected` event, as the timeline serves it.
async fn rejection(srv: &Server, task: &str) -> Value {
    let timeline = srv.timeline(task, "").await;
    let events: Vec<_> = timeline
        .iter()
        .filter(|e| e["event_type"] == "task.rejected")
        .collect();
    assert_eq!(events.len(), 1, "{timeline:?}");
    events[0]["payload"].clone()
}

#[tokio::test]
async fn reject_without_a_body_or_with_an_empty_one_records_no_reason() {
    let srv = Server::start();
    let bare = pending(&srv, "no body").await;
    let (s, v) = srv.post_empty(&reject_path(&bare)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["task"]["approval_state"], "rejected");
    assert_eq!(v["task"]["status"], "blocked");
    let payload = rejection(&srv, &bare).await;
    assert_eq!(payload["approval_state"], "rejected");
    assert!(payload.get("reason").is_none(), "{payload}");

    for body in [json!({}), json!({"reason": "   "}), json!({"reason": null})] {
        let t = pending(&srv, "empty body").await;
        let (s, v) = srv.post(&reject_path(&t), body.clone()).await;
        assert_eq!(s, StatusCode::OK, "{body}: {v}");
        assert_eq!(v["task"]["approval_state"], "rejected");
        let payload = rejection(&srv, &t).await;
        assert!(payload.get("reason").is_none(), "{body}: {payload}");
    }
}

#[tokio::test]
async fn a_reason_is_trimmed_and_recorded_in_the_rejection_event() {
    let srv = Server::start();
    let t = pending(&srv, "with a reason").await;
    let (s, v) = srv
        .post(
            &reject_path(&t),
            json!({"reason": "  not this quarter: the budget is spent  "}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["task"]["approval_state"], "rejected");
    let payload = rejection(&srv, &t).await;
    assert_eq!(payload["reason"], "not this quarter: the budget is spent");
    // The detail view carries the same event.
    let events = srv.events(&t).await;
    assert_eq!(
        only_event(&events, "task.rejected")["payload"]["reason"],
        "not this quarter: the budget is spent"
    );
}

#[tokio::test]
async fn a_reason_over_1000_characters_is_refused_and_changes_nothing() {
    let srv = Server::start();
    // Characters, not bytes: 1000 two-byte characters pass.
    let t = pending(&srv, "at the limit").await;
    let (s, v) = srv
        .post(&reject_path(&t), json!({"reason": "é".repeat(1000)}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        rejection(&srv, &t).await["reason"].as_str().unwrap().len(),
        2000
    );

    let t = pending(&srv, "over the limit").await;
    let (s, v) = srv
        .post(&reject_path(&t), json!({"reason": "x".repeat(1001)}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "validation_failed");
    assert!(str_of(&v, "error").contains("1000"), "{v}");
    assert_eq!(srv.get_task(&t).await["approval_state"], "pending");
    assert_eq!(count_events(&srv.events(&t).await, "task.rejected"), 0);

    // A reason of the wrong JSON type is a malformed body, as for every other field.
    let (s, v) = srv.post(&reject_path(&t), json!({"reason": 5})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "invalid_json");
}
