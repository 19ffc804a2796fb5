//! `GET /api/observe/queue` (Tasklane extension): queued runs and the oldest one's age per
//! priority and per workspace, on the test clock, as enqueues and claims change the queue.

mod common;
mod observe_support;
mod support_agent;

use std::time::{Duration, Instant};

use common::*;
use observe_support::*;
use support_agent::{bearer, create_token};

async fn queue(srv: &Server) -> Value {
    let (s, v) = srv.get("/api/observe/queue").await;
    assert_eq!(s, StatusCode::OK, "queue: {v}");
    v["queue"].clone()
}

/// `(count, oldest_queue_age_ms)` of the priority's row; every priority has one.
fn by_priority(q: &Value, priority: &str) -> (i64, i64) {
    let row = q["by_priority"]
        .as_array()
        .expect("by_priority")
        .iter()
        .find(|r| r["priority"] == priority)
        .unwrap_or_else(|| panic!("no {priority} row in {q}"));
    let count = row["count"].as_i64().unwrap();
    if count == 0 {
        assert_eq!(row["oldest_queued_at"], Value::Null, "{row}");
    } else {
        assert!(row["oldest_queued_at"].is_string(), "{row}");
    }
    (count, row["oldest_queue_age_ms"].as_i64().unwrap())
}

/// `(kind, workspace_id, count, oldest_queue_age_ms)` of every workspace row, in answer order.
fn by_workspace(q: &Value) -> Vec<(String, Option<String>, i64, i64)> {
    q["by_workspace"]
        .as_array()
        .expect("by_workspace")
        .iter()
        .map(|r| {
            (
                str_of(r, "kind"),
                r["workspace_id"].as_str().map(str::to_string),
                r["count"].as_i64().unwrap(),
                r["oldest_queue_age_ms"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn row(
    kind: &str,
    ws: Option<&str>,
    count: i64,
    age_ms: i64,
) -> (String, Option<String>, i64, i64) {
    (kind.to_string(), ws.map(str::to_string), count, age_ms)
}

async fn task_in(srv: &Server, title: &str, workspace: Option<&str>, priority: &str) -> String {
    let body = match workspace {
        Some(ws) => {
            json!({"scope": "workspace", "workspace": ws, "title": title, "priority": priority})
        }
        None => json!({"scope": "global", "title": title, "priority": priority}),
    };
    id(&srv.create_task(body).await)
}

#[tokio::test]
async fn depth_and_oldest_age_per_priority_and_workspace_follow_enqueues_and_claims() {
    let srv = clock_server();
    let empty = queue(&srv).await;
    let priorities: Vec<_> = empty["by_priority"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "priority"))
        .collect();
    assert_eq!(priorities, ["urgent", "high", "medium", "low"]);
    assert_eq!(by_priority(&empty, "high"), (0, 0));
    assert_eq!(by_workspace(&empty), []);
    assert_eq!(empty["top_workspaces"], 20);

    let global = task_in(&srv, "global high", None, "high").await;
    let alpha_medium = task_in(&srv, "alpha medium", Some("alpha"), "medium").await;
    let alpha_high = task_in(&srv, "alpha high", Some("alpha"), "high").await;
    let beta_low = task_in(&srv, "beta low", Some("beta"), "low").await;
    let unqueued = task_in(&srv, "never enqueued", Some("gamma"), "urgent").await;

    let global_run = id(&srv.enqueue(&global).await); // queued at t = 0
    advance(&srv, 60.0).await;
    srv.enqueue(&alpha_medium).await; // t = 60
    srv.enqueue(&alpha_high).await; // t = 60
    advance(&srv, 30.0).await;
    srv.enqueue(&beta_low).await; // t = 90
    advance(&srv, 10.0).await; // read at t = 100
    let _ = unqueued;

    let q = queue(&srv).await;
    assert_eq!(by_priority(&q, "urgent"), (0, 0));
    assert_eq!(by_priority(&q, "high"), (2, 100_000));
    assert_eq!(by_priority(&q, "medium"), (1, 40_000));
    assert_eq!(by_priority(&q, "low"), (1, 10_000));
    // Busiest first; a workspace with nothing queued has no row.
    assert_eq!(
        by_workspace(&q),
        [
            row("workspace", Some("alpha"), 2, 40_000),
            row("global", None, 1, 100_000),
            row("workspace", Some("beta"), 1, 10_000),
        ]
    );

    // Claiming the oldest high run leaves alpha's as the oldest high one, and global empty.
    srv.claim(&global_run).await;
    let q = queue(&srv).await;
    assert_eq!(by_priority(&q, "high"), (1, 40_000));
    assert_eq!(
        by_workspace(&q),
        [
            row("workspace", Some("alpha"), 2, 40_000),
            row("workspace", Some("beta"), 1, 10_000),
        ]
    );

    // Time passing ages the queue without changing its depth.
    advance(&srv, 5.0).await;
    let q = queue(&srv).await;
    assert_eq!(by_priority(&q, "low"), (1, 15_000));
    assert_eq!(
        by_workspace(&q)[0],
        row("workspace", Some("alpha"), 2, 45_000)
    );
}

#[tokio::test]
async fn workspaces_beyond_the_busiest_twenty_are_summed_as_other() {
    let srv = clock_server();
    // w00 … w21 with one queued run each, w21 with a second: w21 and w00 … w18 are named (ties
    // go by name), w19 and w20 are summed. Each is queued a second after the one before.
    let mut tasks = Vec::new();
    for n in 0..22 {
        tasks.push(task_in(&srv, &format!("t{n}"), Some(&format!("w{n:02}")), "medium").await);
    }
    tasks.push(task_in(&srv, "t21b", Some("w21"), "medium").await);
    for t in &tasks {
        srv.enqueue(t).await;
        advance(&srv, 1.0).await;
    }
    // Read at t = 23: the run queued at t = n is 23 - n seconds old.
    let q = queue(&srv).await;
    let rows = by_workspace(&q);
    assert_eq!(rows.len(), 21, "{q}");
    assert_eq!(rows[0], row("workspace", Some("w21"), 2, 2_000));
    assert_eq!(rows[1], row("workspace", Some("w00"), 1, 23_000));
    assert_eq!(rows[19], row("workspace", Some("w18"), 1, 5_000));
    assert_eq!(rows[20], row("other", None, 2, 4_000));
    assert_eq!(by_priority(&q, "medium"), (23, 23_000));
}

#[tokio::test]
async fn every_role_may_read_the_queue_in_token_mode() {
    let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token")]);
    for role in ["viewer", "agent", "operator"] {
        let token = create_token(srv.database(), role, &format!("{role}-1"));
        // A token created while the server runs takes effect within moments: wait, bounded.
        let deadline = Instant::now() + Duration::from_secs(5);
        let (s, v) = loop {
            let (s, v) = srv
                .call(Method::GET, "/api/observe/queue", None, &bearer(&token))
                .await;
            if s != StatusCode::UNAUTHORIZED || Instant::now() > deadline {
                break (s, v);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(s, StatusCode::OK, "{role}: {v}");
        assert_eq!(v["queue"]["by_priority"].as_array().unwrap().len(), 4);
    }
    let (s, v) = srv.get("/api/observe/queue").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
}
