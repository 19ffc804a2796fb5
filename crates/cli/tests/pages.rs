//! Bounded lists: page sizes (default 100, at most 1000), `next_cursor` walks over tasks, runs and
//! timelines, and the caps on what the task detail, the tree and the inbox embed.

mod common;
mod observe_support;

use std::collections::HashSet;

use common::*;
use futures::future::join_all;
use observe_support::{advance, clock_server, group, inbox, item_ids};

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id).collect()
}

/// The list order key of a task summary: activity, updated, created, id (compared descending).
fn list_key(t: &Value) -> (String, String, String, String) {
    (
        str_of(t, "last_activity_at"),
        str_of(t, "updated_at"),
        str_of(t, "created_at"),
        str_of(t, "id"),
    )
}

fn assert_strictly_descending(items: &[Value]) {
    for pair in items.windows(2) {
        assert!(
            list_key(&pair[0]) > list_key(&pair[1]),
            "out of list order: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

/// A page-size walk returns the one-page answer exactly: every task once, in list order, ties on
/// every timestamp included (the test clock does not move between these creates).
#[tokio::test]
async fn walking_pages_returns_every_task_once_in_list_order() {
    let srv = clock_server();
    let parent = srv.task("parent").await;
    join_all((0..20).map(|i| {
        let srv = &srv;
        async move { srv.task(&format!("same instant {i}")).await }
    }))
    .await;
    advance(&srv, 1.0).await;
    for i in 0..5 {
        srv.child(&parent, &format!("child {i}")).await;
    }
    let draft = id(&srv.task_with("draft", json!({"draft": true})).await);

    let by_parent = format!("parent_task_id={parent}");
    for query in ["", "include_drafts=true", &by_parent, "status=ready"] {
        let sep = if query.is_empty() { "" } else { "&" };
        let whole = srv.list(&format!("{query}{sep}limit=1000")).await;
        let pages = srv
            .pages(&format!("/api/tasks?{query}{sep}limit=7"), "tasks")
            .await;
        assert!(pages.iter().all(|p| p.len() <= 7), "{query}");
        assert!(
            pages[..pages.len() - 1].iter().all(|p| p.len() == 7),
            "{query}: only the last page is short"
        );
        let walked: Vec<Value> = pages.concat();
        assert_eq!(ids(&walked), ids(&whole), "{query}");
        assert_strictly_descending(&walked);
    }
    assert_eq!(srv.list("limit=1000").await.len(), 26);
    assert!(!srv.list_ids("limit=1000").await.contains(&draft));
    assert!(srv
        .list_ids("include_drafts=true&limit=1000")
        .await
        .contains(&draft));
}

/// The guarantee of a walk while tasks change: activity moves a task to the front of the list.
/// No task is ever returned twice; every task that existed at the start and had no activity
/// during the walk is returned exactly once, in order; a task created, or active while not yet
/// returned, moves ahead of the cursor and is left to the next walk.
#[tokio::test]
async fn a_walk_under_concurrent_writes_repeats_nothing_and_misses_no_quiet_task() {
    let srv = clock_server();
    let mut before = Vec::new();
    for i in 0..12 {
        advance(&srv, 1.0).await;
        before.push(srv.task(&format!("task {i}")).await);
    }
    // Newest first: before[11] leads the list.
    let mut touched = HashSet::new();
    let mut created = Vec::new();
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for step in 0.. {
        let path = match &cursor {
            Some(c) => format!("/api/tasks?limit=4&cursor={c}"),
            None => "/api/tasks?limit=4".to_string(),
        };
        let (s, v) = srv.get(&path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        seen.extend(v["tasks"].as_array().cloned().unwrap_or_default());
        let Some(next) = v.get("next_cursor") else {
            break;
        };
        cursor = Some(next.as_str().unwrap().to_string());
        // Between pages: a new task, activity on a task already returned and on tasks not yet
        // returned, and a deleted task.
        advance(&srv, 1.0).await;
        created.push(srv.task(&format!("created during the walk {step}")).await);
        let returned = id(seen.last().unwrap());
        srv.patch(
            &format!("/api/tasks/{returned}"),
            json!({"title": "retitled"}),
        )
        .await;
        touched.insert(returned);
        if step == 0 {
            srv.patch(
                &format!("/api/tasks/{}", before[2]),
                json!({"priority": "high"}),
            )
            .await;
            srv.enqueue(&before[5]).await;
            let (s, _) = srv.delete(&format!("/api/tasks/{}", before[3])).await;
            assert_eq!(s, StatusCode::NO_CONTENT);
            touched.extend([before[2].clone(), before[5].clone(), before[3].clone()]);
        }
    }

    let walked = ids(&seen);
    let unique: HashSet<&String> = walked.iter().collect();
    assert_eq!(unique.len(), walked.len(), "no task twice: {walked:?}");
    assert_strictly_descending(&seen);
    let quiet: Vec<&String> = before
        .iter()
        .rev()
        .filter(|t| !touched.contains(*t))
        .collect();
    let walked_quiet: Vec<&String> = walked.iter().filter(|t| quiet.contains(t)).collect();
    assert_eq!(walked_quiet, quiet, "every quiet task once, in list order");
    for moved in [&before[2], &before[5], &before[3]] {
        assert!(!walked.contains(moved), "{moved} moved ahead of the cursor");
    }
    assert!(created.iter().all(|t| !walked.contains(t)));

    // A new walk sees the changes: recent activity first, every task once.
    let fresh: Vec<Value> = srv.pages("/api/tasks?limit=5", "tasks").await.concat();
    assert_strictly_descending(&fresh);
    let fresh_ids: HashSet<String> = ids(&fresh).into_iter().collect();
    let expected: HashSet<String> = before
        .iter()
        .chain(&created)
        .filter(|t| **t != before[3])
        .cloned()
        .collect();
    assert_eq!(fresh_ids, expected);
    assert_eq!(fresh.len(), expected.len());
}

/// A root with 16 children of 63 children each: 1025 tasks, all the caller's own work.
async fn big_forest(srv: &Server) -> String {
    let me = json!({"kind": "human", "ref": "local-user"});
    let body = |title: String| json!({"scope": "global", "title": title, "owner": me});
    let root = id(&srv.create_task(body("root".into())).await);
    let mids: Vec<String> =
        join_all((0..16).map(|m| srv.create_child(&root, body(format!("mid {m}")))))
            .await
            .iter()
            .map(id)
            .collect();
    join_all(mids.iter().map(|mid| async {
        for leaf in 0..63 {
            srv.create_child(mid, body(format!("leaf {leaf}"))).await;
        }
    }))
    .await;
    root
}

#[tokio::test]
async fn lists_default_to_100_and_clamp_to_1000() {
    let srv = Server::start();
    let root = big_forest(&srv).await;

    for path in ["/api/tasks", "/api/tasks?limit=0", "/api/tasks?limit=100"] {
        let (s, v) = srv.get(path).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["tasks"].as_array().unwrap().len(), 100, "{path}");
        assert!(v["next_cursor"].is_string(), "{path}");
    }
    for path in ["/api/tasks?limit=1001", "/api/tasks?limit=99999999"] {
        let (_, v) = srv.get(path).await;
        assert_eq!(
            v["tasks"].as_array().unwrap().len(),
            1000,
            "{path} is clamped"
        );
        let c = v["next_cursor"].as_str().unwrap();
        let (_, rest) = srv.get(&format!("/api/tasks?limit=1000&cursor={c}")).await;
        assert_eq!(rest["tasks"].as_array().unwrap().len(), 25);
        assert!(rest.get("next_cursor").is_none(), "last page: {rest}");
    }
    let all: Vec<Value> = srv.pages("/api/tasks", "tasks").await.concat();
    assert_eq!(all.len(), 1025);
    assert_strictly_descending(&all);

    // The inbox lanes take the same page rule; counts stay whole.
    let mine = group(&inbox(&srv, "").await, "my_work").clone();
    assert_eq!(mine["count"], 1025);
    assert_eq!(item_ids(&mine).len(), 100);
    let clamped = inbox(&srv, "?lane=my_work&limit=5000").await;
    assert_eq!(item_ids(group(&clamped, "my_work")).len(), 1000);

    // The tree holds the first 1000 descendants in tree order and says it left some out.
    let (s, v) = srv.get(&format!("/api/tasks/{root}/tree")).await;
    assert_eq!(s, StatusCode::OK);
    let descendants = v["tree"]["descendants"].as_array().unwrap();
    assert_eq!(descendants.len(), 1000);
    assert_eq!(v["tree"]["descendants_truncated"], true);
    assert!(descendants[..16].iter().all(|d| d["depth"] == 1));
    assert!(descendants[16..].iter().all(|d| d["depth"] == 2));
}

#[tokio::test]
async fn bad_limits_and_cursors_are_422() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    srv.task("u").await;
    let (_, page) = srv.get("/api/tasks?limit=1").await;
    let task_cursor = page["next_cursor"].as_str().unwrap().to_string();
    srv.patch(&format!("/api/tasks/{tid}"), json!({"title": "t2"}))
        .await;
    let (_, page) = srv.get(&format!("/api/tasks/{tid}/timeline?limit=1")).await;
    let timeline_cursor = page["next_cursor"].as_str().unwrap().to_string();

    let runs = format!("/api/tasks/{tid}/runs");
    let timeline = format!("/api/tasks/{tid}/timeline");
    for path in [
        "/api/tasks?cursor=nonsense".to_string(),
        "/api/tasks?cursor=abcd".to_string(),
        format!("/api/tasks?cursor={timeline_cursor}"),
        "/api/tasks?limit=-1".to_string(),
        format!("{runs}?cursor=zz"),
        format!("{runs}?cursor={task_cursor}"),
        format!("{runs}?limit=-5"),
        format!("{timeline}?cursor=%00"),
        format!("{timeline}?cursor={task_cursor}"),
        format!("{timeline}?cursor={timeline_cursor}&after_sequence=1"),
        "/api/observe/tasks/inbox?limit=-1".to_string(),
    ] {
        assert_err(&srv.get(&path).await, 422, "validation_failed");
    }
}

#[tokio::test]
async fn timelines_page_by_sequence_and_the_detail_embeds_the_newest_100_events() {
    let srv = Server::start();
    let tid = srv.task("busy").await;
    for i in 0..104 {
        let (s, v) = srv
            .patch(
                &format!("/api/tasks/{tid}"),
                json!({"title": format!("v{i}")}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // 105 events: created + 104 updates.
    let whole = srv.timeline(&tid, "limit=1000").await;
    assert_eq!(whole.len(), 105);
    let seqs = |items: &[Value]| -> Vec<i64> {
        items
            .iter()
            .map(|e| e["sequence"].as_i64().unwrap())
            .collect()
    };

    let (_, first) = srv.get(&format!("/api/tasks/{tid}/timeline")).await;
    assert_eq!(
        first["timeline"].as_array().unwrap().len(),
        100,
        "default page"
    );
    assert!(first["next_cursor"].is_string());

    let pages = srv
        .pages(&format!("/api/tasks/{tid}/timeline?limit=10"), "timeline")
        .await;
    assert_eq!(pages.len(), 11);
    assert_eq!(
        seqs(&pages.concat()),
        seqs(&whole),
        "every event once, in sequence order"
    );
    // A cursor and after_sequence resume at the same place.
    let after = whole[49]["sequence"].as_i64().unwrap();
    let by_seq = srv
        .timeline(&tid, &format!("after_sequence={after}&limit=1000"))
        .await;
    assert_eq!(seqs(&by_seq), seqs(&whole[50..]));

    let detail = srv.detail(&tid).await;
    let events = detail["events"].as_array().unwrap();
    assert_eq!(events.len(), 100);
    assert_eq!(detail["events_truncated"], true);
    let mut newest: Vec<i64> = seqs(&whole[5..]);
    newest.reverse();
    assert_eq!(seqs(events), newest, "the newest 100, newest first");

    let quiet = srv.task("quiet").await;
    let detail = srv.detail(&quiet).await;
    assert_eq!(detail["events"].as_array().unwrap().len(), 1);
    assert!(detail.get("events_truncated").is_none());
}

#[tokio::test]
async fn run_lists_page_in_queue_order() {
    let srv = clock_server();
    let tid = id(&srv.task_with("retried", json!({"max_attempts": 10})).await);
    let mut queued = Vec::new();
    for i in 0..7 {
        // Runs 3 and 4 share an instant: their order falls to the id.
        if i != 4 {
            advance(&srv, 1.0).await;
        }
        queued.push(srv.fail_task_once(&tid, "again").await);
    }
    let whole = srv.runs(&tid, "").await;
    assert_eq!(whole.len(), 7);
    let pages = srv
        .pages(&format!("/api/tasks/{tid}/runs?limit=3"), "runs")
        .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    assert_eq!(ids(&pages.concat()), ids(&whole));
    let key = |r: &Value| (str_of(r, "queued_at"), id(r));
    assert!(
        whole.windows(2).all(|w| key(&w[0]) > key(&w[1])),
        "queued_at then id, descending: {whole:?}"
    );
    let mut all = ids(&whole);
    all.sort();
    queued.sort();
    assert_eq!(all, queued);

    let filtered = srv
        .pages(
            &format!("/api/tasks/{tid}/runs?status=failed&limit=2"),
            "runs",
        )
        .await;
    assert_eq!(ids(&filtered.concat()), ids(&whole));
}
