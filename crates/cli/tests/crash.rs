//! Durability: nothing acknowledged is lost by `kill -9`, the server restarts cleanly on the same
//! database, and SIGTERM is a graceful exit 0.
mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::join_all;

const CLIENTS: usize = 8;

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_creates_survive_kill_9() {
    let mut srv = Server::start();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let unexpected = Arc::new(Mutex::new(Vec::<String>::new()));
    let threshold = 300;
    let reached = Arc::new(tokio::sync::Notify::new());

    let clients = (0..CLIENTS).map(|c| {
        let api = srv.api.clone();
        let acked = acked.clone();
        let count = count.clone();
        let unexpected = unexpected.clone();
        let reached = reached.clone();
        tokio::spawn(async move {
            for n in 0.. {
                let tid = format!("crash-{c}-{n}");
                let body = json!({"id": tid, "scope": "global", "title": format!("crash {c} {n}")});
                match api
                    .try_call(Method::POST, "/api/tasks", Some(body), &[])
                    .await
                {
                    Ok((s, _)) if s == StatusCode::CREATED => {
                        acked.lock().unwrap().push(tid);
                        if count.fetch_add(1, Ordering::SeqCst) + 1 == threshold {
                            reached.notify_one();
                        }
                    }
                    Ok((s, _)) if s == StatusCode::SERVICE_UNAVAILABLE => continue,
                    Ok((s, v)) => unexpected.lock().unwrap().push(format!("{tid}: {s} {v}")),
                    Err(_) => break, // the server is gone
                }
            }
        })
    });
    let handles: Vec<_> = clients.collect();
    reached.notified().await;
    // Kill while the clients are still writing as fast as they can.
    srv.kill9();
    for r in join_all(handles).await {
        r.expect("client task panicked");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        unexpected.lock().unwrap().is_empty(),
        "{:?}",
        unexpected.lock().unwrap()
    );
    assert!(acked.len() >= threshold, "acked {}", acked.len());

    srv.restart();
    // Every acknowledged task is there, with its create event (the two commit together).
    let mut max_seq = 0;
    for chunk in acked.chunks(32) {
        let futs = chunk.iter().map(|tid| {
            let api = srv.api.clone();
            let tid = tid.clone();
            tokio::spawn(async move {
                let (s, v) = api.get(&format!("/api/tasks/{tid}")).await;
                assert_eq!(s, 200, "acknowledged task {tid} lost after kill -9: {v}");
                let events = v["task"]["events"].as_array().cloned().unwrap_or_default();
                assert_eq!(events.len(), 1, "{tid}: {v}");
                assert_eq!(events[0]["event_type"], "task.created");
                v["task"]["task"]["latest_event_seq"].as_i64().unwrap_or(0)
            })
        });
        for seq in join_all(futs).await {
            max_seq = max_seq.max(seq.unwrap());
        }
    }
    let listed = srv.list_all_ids("limit=1000").await;
    assert!(
        listed.len() >= acked.len(),
        "listed {} < acked {}",
        listed.len(),
        acked.len()
    );

    // The restarted server works normally and keeps numbering after the old events.
    let fresh = srv.task("after restart").await;
    assert!(srv.latest_seq(&fresh).await > max_seq);
    srv.complete_task(&fresh).await;
    assert_eq!(srv.status_of(&fresh).await, "completed");
}

/// Steps of a run's life on the operator path, in order.
const STEPS: [&str; 5] = ["created", "queued", "claimed", "running", "completed"];

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_transitions_survive_kill_9_atomically() {
    let mut srv = Server::start();
    // task id -> (last acknowledged step index, run id)
    let state = Arc::new(Mutex::new(std::collections::HashMap::<
        String,
        (usize, Option<String>),
    >::new()));
    let done_cycles = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::new(AtomicBool::new(false));
    let threshold = 40;

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let api = srv.api.clone();
            let state = state.clone();
            let done_cycles = done_cycles.clone();
            let reached = reached.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                'outer: for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let tid = format!("life-{c}-{n}");
                    let body = json!({"id": tid, "scope": "global", "title": "life"});
                    match api
                        .try_call(Method::POST, "/api/tasks", Some(body), &[])
                        .await
                    {
                        Ok((s, _)) if s == StatusCode::CREATED => {
                            state.lock().unwrap().insert(tid.clone(), (0, None));
                        }
                        _ => break,
                    }
                    let mut rid = String::new();
                    for step in 1..STEPS.len() {
                        let path = match step {
                            1 => format!("/api/tasks/{tid}/runs"),
                            2 => format!("/api/task-runs/{rid}/claim"),
                            3 => format!("/api/task-runs/{rid}/start"),
                            _ => format!("/api/task-runs/{rid}/complete"),
                        };
                        match api
                            .try_call(Method::POST, &path, Some(json!({})), &[])
                            .await
                        {
                            Ok((s, v)) if s.is_success() => {
                                if step == 1 {
                                    rid = id(&v["run"]);
                                }
                                state
                                    .lock()
                                    .unwrap()
                                    .insert(tid.clone(), (step, Some(rid.clone())));
                            }
                            Ok((s, v)) => panic!("{path}: unexpected {s} {v}"),
                            Err(_) => break 'outer,
                        }
                    }
                    if done_cycles.fetch_add(1, Ordering::SeqCst) + 1 == threshold {
                        reached.notify_one();
                    }
                }
            })
        })
        .collect();
    reached.notified().await;
    srv.kill9();
    stop.store(true, Ordering::SeqCst);
    for r in join_all(clients).await {
        r.expect("client task panicked");
    }

    srv.restart();
    let state = state.lock().unwrap().clone();
    assert!(state.len() >= threshold);
    for (tid, (step, rid)) in &state {
        let d = srv.detail(tid).await;
        let task_status = str_of(&d["task"], "status");
        let runs = d["runs"].as_array().cloned().unwrap_or_default();
        // The state on disk is the acknowledged one, or at most the one in-flight step after it.
        let on_disk = match runs.as_slice() {
            [] => 0,
            [r] => {
                if let Some(rid) = rid {
                    assert_eq!(&id(r), rid, "{tid}");
                }
                match r["status"].as_str().unwrap() {
                    "queued" => 1,
                    "claimed" => 2,
                    "running" => 3,
                    "completed" => 4,
                    other => panic!("{tid}: unexpected run status {other}"),
                }
            }
            more => panic!("{tid}: more than one run: {more:?}"),
        };
        assert!(
            on_disk == *step || on_disk == step + 1,
            "{tid}: acknowledged {} but found {} on disk",
            STEPS[*step],
            STEPS[on_disk]
        );
        // Task status and events agree with the run (the writes committed together).
        let want_status = match on_disk {
            0..=2 => "ready",
            3 => "in_progress",
            _ => "completed",
        };
        assert_eq!(task_status, want_status, "{tid}: {d}");
        let events = d["events"].as_array().cloned().unwrap_or_default();
        let want_events = [1, 2, 3, 5, 6][on_disk];
        assert_eq!(
            events.len(),
            want_events,
            "{tid}: events do not match the run state: {d}"
        );
    }
    // And the server carries on.
    let fresh = srv.task("fresh").await;
    srv.complete_task(&fresh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_is_a_graceful_exit_and_data_persists() {
    let mut srv = Server::start();
    let tid = srv.task("persisted").await;
    let rid = srv.running_run(&tid).await;
    let status = srv.terminate();
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status:?}; log:\n{}",
        srv.log()
    );
    assert!(
        srv.extra_stdout_lines().is_empty(),
        "the server prints exactly one line on stdout: {:?}",
        srv.extra_stdout_lines()
    );
    srv.restart();
    assert_eq!(srv.status_of(&tid).await, "in_progress");
    assert_eq!(srv.get_run(&rid).await["status"], "running");
    srv.complete_run(&rid, None).await;
    assert_eq!(srv.status_of(&tid).await, "completed");
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_without_activity_is_clean_and_repeatable() {
    let mut srv = Server::start();
    let tid = srv.task("t").await;
    for _ in 0..3 {
        srv.restart();
        assert_eq!(srv.get_task(&tid).await["title"], "t");
    }
    assert!(srv
        .listen_line
        .starts_with("tasklane listening on http://127.0.0.1:"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_exits_0_and_keeps_every_acknowledged_write() {
    let mut srv = Server::start();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(tokio::sync::Notify::new());
    let threshold = 100;
    let handles: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let api = srv.api.clone();
            let acked = acked.clone();
            let count = count.clone();
            let reached = reached.clone();
            tokio::spawn(async move {
                for n in 0.. {
                    let tid = format!("term-{c}-{n}");
                    let body = json!({"id": tid, "scope": "global", "title": "t"});
                    match api
                        .try_call(Method::POST, "/api/tasks", Some(body), &[])
                        .await
                    {
                        Ok((s, _)) if s == StatusCode::CREATED => {
                            acked.lock().unwrap().push(tid);
                            if count.fetch_add(1, Ordering::SeqCst) + 1 == threshold {
                                reached.notify_one();
                            }
                        }
                        // Refusals while shutting down are fine; a dead socket ends the client.
                        Ok((s, v)) if s.as_u16() == 503 => {
                            let _ = v;
                        }
                        Ok((s, v)) => panic!("{tid}: unexpected {s} {v}"),
                        Err(_) => break,
                    }
                    if n > 100_000 {
                        break;
                    }
                }
            })
        })
        .collect();
    reached.notified().await;
    let terminate = tokio::task::spawn_blocking(move || {
        let status = srv.terminate();
        (srv, status)
    });
    for h in join_all(handles).await {
        h.expect("client task panicked");
    }
    let (mut srv, status) = terminate.await.unwrap();
    assert!(
        status.success(),
        "SIGTERM under load must exit 0: {status:?}"
    );
    srv.restart();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= threshold);
    for tid in &acked {
        let (s, v) = srv.get(&format!("/api/tasks/{tid}")).await;
        assert_eq!(s, 200, "acknowledged {tid} lost across SIGTERM: {v}");
    }
}
