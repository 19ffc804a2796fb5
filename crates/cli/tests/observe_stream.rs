//! `GET /api/tasks/{id}/timeline`, `/tree` and the SSE `/stream`: sequence windows, replay,
//! subtree delivery (children created later), keepalive, slow-consumer catch-up, framing.

mod common;
mod observe_support;

use std::time::Duration;

use common::*;
use observe_support::*;

const WAIT: Duration = Duration::from_secs(10);

fn seqs(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|i| i["sequence"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn timeline_windows_by_sequence() {
    let srv = Server::start();
    let t = srv.task("lifecycle").await;
    srv.complete_task(&t).await;
    let child = srv.child(&t, "kid").await;
    let all = srv.timeline(&t, "").await;
    let s = seqs(&all);
    assert!(s.len() >= 5, "{all:?}");
    assert!(s.windows(2).all(|w| w[0] < w[1]), "ascending: {s:?}");
    assert_eq!(all[0]["event_type"], "task.created");
    assert_eq!(all.last().unwrap()["event_type"], "task.child_created");
    assert!(
        all.iter().all(|i| i["task"]["id"] == t.as_str()),
        "own events only"
    );
    // The child's task.created comes right before the parent's child_created.
    let child_seq = srv.timeline(&child, "").await[0]["sequence"]
        .as_i64()
        .unwrap();
    assert_eq!(child_seq + 1, *s.last().unwrap());

    let page1 = srv.timeline(&t, "limit=3").await;
    assert_eq!(seqs(&page1), s[..3].to_vec());
    let page2 = srv
        .timeline(&t, &format!("after_sequence={}&limit=4", s[2]))
        .await;
    assert_eq!(seqs(&page2), s[3..7.min(s.len())].to_vec());
    assert!(srv
        .timeline(&t, &format!("after_sequence={}", s.last().unwrap()))
        .await
        .is_empty());

    // Items carry the task as it is now and the run as it is now.
    let with_run = all
        .iter()
        .find(|i| i["event_type"] == "task.run_enqueued")
        .unwrap();
    assert_eq!(with_run["run"]["status"], "completed");
    assert_eq!(with_run["task"]["status"], "completed");
    assert!(with_run["run"]["max_attempts"].as_i64().unwrap() > 0);
    assert_present(with_run, "event_id");
    assert_present(with_run, "actor");
    assert_present(with_run, "origin");
    assert!(is_micros_utc(&str_of(with_run, "timestamp")));

    for q in [
        "after_sequence=-1",
        "after_sequence=x",
        "limit=-2",
        "limit=1.5",
    ] {
        let r = srv.get(&format!("/api/tasks/{t}/timeline?{q}")).await;
        assert_err(&r, 422, "validation_failed");
    }
    assert_err(
        &srv.get("/api/tasks/task-nope/timeline").await,
        404,
        "task_not_found",
    );
}

/// Root -> [child-active (running run, newer), child-idle], and a
/// grandchild under child-active.
#[tokio::test]
async fn tree_orders_by_depth_then_activity() {
    let srv = clock_server();
    let root = srv.task("root").await;
    let active = srv.child(&root, "child-active").await;
    let idle = srv.child(&root, "child-idle").await;
    let grand = srv.child(&active, "grandchild").await;
    minutes(&srv, 4.0).await;
    srv.patch(
        &format!("/api/tasks/{idle}"),
        json!({"description": "touched"}),
    )
    .await;
    minutes(&srv, 2.0).await;
    let run = srv.running_run(&active).await;

    let (s, v) = srv.get(&format!("/api/tasks/{root}/tree")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let tree = &v["tree"];
    assert_eq!(tree["root"]["task"]["id"], root.as_str());
    assert_eq!(tree["root"]["depth"], 0);
    assert_eq!(tree["root"]["child_count"], 2);
    assert_absent(&tree["root"], "parent_task_id");
    let d = tree["descendants"].as_array().unwrap();
    let order: Vec<String> = d.iter().map(|n| str_of(&n["task"], "id")).collect();
    assert_eq!(order, vec![active.clone(), idle.clone(), grand.clone()]);
    assert_eq!(d[0]["depth"], 1);
    assert_eq!(d[0]["child_count"], 1);
    assert_eq!(d[0]["active_run"]["id"], run.as_str());
    assert_eq!(d[0]["active_run"]["status"], "running");
    assert_eq!(d[0]["task"]["status"], "in_progress");
    assert_absent(&d[1], "child_count");
    assert_absent(&d[1], "active_run");
    assert_eq!(d[2]["depth"], 2);
    assert_eq!(d[2]["parent_task_id"], active.as_str());

    // A subtree root keeps its own parent id; ancestors are never included.
    let (_, v) = srv.get(&format!("/api/tasks/{active}/tree")).await;
    assert_eq!(v["tree"]["root"]["parent_task_id"], root.as_str());
    assert_eq!(v["tree"]["descendants"].as_array().unwrap().len(), 1);
    let (_, v) = srv.get(&format!("/api/tasks/{grand}/tree")).await;
    assert_absent(&v["tree"], "descendants");
    assert_err(
        &srv.get("/api/tasks/task-nope/tree").await,
        404,
        "task_not_found",
    );
}

#[tokio::test]
async fn stream_framing_backlog_and_replay() {
    let srv = Server::start();
    let t = srv.task("streamed").await;
    srv.complete_task(&t).await;
    let timeline = srv.timeline(&t, "").await;
    let all = seqs(&timeline);

    let mut c = SseClient::connect(&srv, &format!("/api/tasks/{t}/stream"), &[]).await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.headers["content-type"], "text/event-stream");
    assert_eq!(c.headers["cache-control"], "no-cache");
    assert_eq!(c.next(WAIT).await, Some(Sse::Retry("3000".into())));
    let frames = c.frames(all.len(), WAIT).await;
    assert_eq!(ids(&frames), all);
    for ((id, event, data), item) in frames.iter().zip(&timeline) {
        assert_eq!(data["sequence"], *id);
        assert_eq!(data["type"], event.as_str());
        assert_eq!(data["timeline"], *item, "frame data is the timeline item");
    }
    // Byte-exact: keys in the order sequence, type, timeline.
    let first = &frames[0];
    assert!(
        c.raw.contains(&format!(
            "id: {}\nevent: task.created\ndata: {{\"sequence\":{},\"type\":\"task.created\",\"timeline\":{{",
            first.0, first.0
        )),
        "{}",
        c.raw
    );
    assert!(c.raw.starts_with("retry: 3000\n\n"));

    // after_sequence, and Last-Event-ID overriding it (even "0").
    let mid = all[2];
    let mut c = SseClient::connect(
        &srv,
        &format!("/api/tasks/{t}/stream?after_sequence={mid}"),
        &[],
    )
    .await;
    let got = c.frames(all.len() - 3, WAIT).await;
    assert_eq!(ids(&got), all[3..].to_vec());
    assert!(
        c.next_frame(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );
    let mut c = SseClient::connect(
        &srv,
        &format!("/api/tasks/{t}/stream?after_sequence={mid}"),
        &[("Last-Event-ID", "0")],
    )
    .await;
    assert_eq!(ids(&c.frames(all.len(), WAIT).await), all);

    // Reconnect after the last seen event: only new events, and the next one live.
    let last = *all.last().unwrap();
    let mut c = SseClient::connect(
        &srv,
        &format!("/api/tasks/{t}/stream"),
        &[("Last-Event-ID", &last.to_string())],
    )
    .await;
    assert!(c.next_frame(Duration::from_millis(300)).await.is_none());
    srv.patch(&format!("/api/tasks/{t}"), json!({"title": "renamed"}))
        .await;
    let (id, event, _) = c.next_frame(WAIT).await.expect("live event");
    assert!(id > last);
    assert_eq!(event, "task.updated");

    for (q, h) in [
        ("?after_sequence=-1", None),
        ("?after_sequence=abc", None),
        ("", Some("bogus")),
    ] {
        let headers: Vec<(&str, &str)> = h.map(|v| vec![("Last-Event-ID", v)]).unwrap_or_default();
        let c = SseClient::connect(&srv, &format!("/api/tasks/{t}/stream{q}"), &headers).await;
        assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(c.json().await["code"], "validation_failed");
    }
    let c = SseClient::connect(&srv, "/api/tasks/task-nope/stream", &[]).await;
    assert_eq!(c.status, StatusCode::NOT_FOUND);
    assert_eq!(c.json().await["code"], "task_not_found");
}

#[tokio::test]
async fn stream_covers_the_subtree_including_later_children() {
    let srv = Server::start();
    let root = srv.task("root").await;
    let other = srv.task("unrelated").await;
    let after = srv.latest_seq(&root).await;
    let mut c = SseClient::connect(
        &srv,
        &format!("/api/tasks/{root}/stream?after_sequence={after}"),
        &[],
    )
    .await;
    assert_eq!(c.next(WAIT).await, Some(Sse::Retry("3000".into())));

    let child = srv.child(&root, "later child").await;
    let grand = srv.child(&child, "later grandchild").await;
    srv.patch(&format!("/api/tasks/{other}"), json!({"title": "noise"}))
        .await;
    srv.complete_task(&grand).await;
    let mut expected: Vec<(i64, String)> = Vec::new();
    for task in [&root, &child, &grand] {
        for item in srv.timeline(task, &format!("after_sequence={after}")).await {
            expected.push((
                item["sequence"].as_i64().unwrap(),
                str_of(&item, "event_type"),
            ));
        }
    }
    expected.sort();
    let frames = c.frames(expected.len(), WAIT).await;
    let got: Vec<(i64, String)> = frames.iter().map(|f| (f.0, f.1.clone())).collect();
    assert_eq!(got, expected, "every subtree event once, in sequence order");
    assert!(frames
        .iter()
        .all(|f| f.2["timeline"]["task"]["id"] != other.as_str()));
    assert!(c.next_frame(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn keepalive_comments_on_an_idle_stream() {
    let srv = Server::start_with_env(&[("TASKLANE_SSE_KEEPALIVE_MS", "150")]);
    let t = srv.task("idle").await;
    let seq = srv.latest_seq(&t).await;
    let mut c = SseClient::connect(
        &srv,
        &format!("/api/tasks/{t}/stream?after_sequence={seq}"),
        &[],
    )
    .await;
    assert_eq!(c.next(WAIT).await, Some(Sse::Retry("3000".into())));
    assert_eq!(c.next(WAIT).await, Some(Sse::Comment("keepalive".into())));
    assert_eq!(c.next(WAIT).await, Some(Sse::Comment("keepalive".into())));
    assert!(c.raw.contains("\n\n: keepalive\n\n"), "{:?}", c.raw);
}

/// A consumer that stops reading while far more than its buffers is written is caught up from
/// storage: nothing skipped, nothing twice, in order.
#[tokio::test]
async fn slow_consumer_is_caught_up_without_loss() {
    // Debug logs of the stream module show that the catch-up path really ran.
    let srv = Server::start_with_env(&[("RUST_LOG", "warn,tasklane_server::routes::stream=debug")]);
    let root = srv.task("busy root").await;
    let after = srv.latest_seq(&root).await;
    let mut c = SseClient::connect(
        &srv,
        &format!("/api/tasks/{root}/stream?after_sequence={after}"),
        &[],
    )
    .await;
    assert_eq!(c.next(WAIT).await, Some(Sse::Retry("3000".into())));

    // ~400 events of ~60 KiB each: far beyond the subscriber queue and the socket buffers.
    let big = json!({ "blob": blob(60_000) });
    let mut parents = Vec::new();
    for p in 0..4 {
        parents.push(srv.child(&root, &format!("parent {p}")).await);
    }
    let writers = parents.iter().map(|p| {
        let api = srv.api.clone();
        let p = p.clone();
        let big = big.clone();
        async move {
            for i in 0..50 {
                let (s, v) = api
                    .post(
                        &format!("/api/tasks/{p}/children"),
                        json!({"scope": "global", "title": format!("c{i}")}),
                    )
                    .await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
                let kid = id(&v["task"]);
                let (s, v) = api
                    .post(
                        &format!("/api/tasks/{kid}/cancel"),
                        json!({"reason": "load", "metadata": big}),
                    )
                    .await;
                assert!(s.is_success(), "{v}");
            }
        }
    });
    futures::future::join_all(writers).await;

    let mut tasks = vec![root.clone()];
    tasks.extend(parents.iter().cloned());
    for p in &parents {
        let (_, v) = srv.get(&format!("/api/tasks/{p}/tree")).await;
        for n in v["tree"]["descendants"].as_array().unwrap() {
            tasks.push(str_of(&n["task"], "id"));
        }
    }
    let mut expected = Vec::new();
    for t in &tasks {
        expected.extend(seqs(
            &srv.timeline(t, &format!("after_sequence={after}")).await,
        ));
    }
    expected.sort();
    assert!(expected.len() >= 600, "{}", expected.len());
    let frames = c.frames(expected.len(), WAIT).await;
    assert_eq!(ids(&frames), expected);
    assert!(
        c.next_frame(Duration::from_millis(300)).await.is_none(),
        "no duplicates"
    );
    assert!(
        c.raw.len() > 10_000_000,
        "the stream carried {} bytes",
        c.raw.len()
    );
    assert!(
        srv.log().contains("lagged; catching up"),
        "the subscriber never lagged"
    );
}
