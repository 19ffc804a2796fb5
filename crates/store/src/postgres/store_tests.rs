//! The SQLite backend's store tests, run against PostgreSQL: the same calls must give the same
//! answers. Each test creates its own scratch database through `TASKLANE_TEST_DATABASE_URL`
//! (e.g. `postgres://postgres@127.0.0.1/test?sslmode=disable`) and is skipped when that is not
//! set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use tasklane_core::model::{
    ApprovalPolicy, ApprovalState, Dependency, IdempotencyRecord, NewEvent, OwnerKind, Priority,
    Ref, Run, RunStatus, Scope, Task, TaskStatus,
};
use tasklane_core::page::TaskKey;
use tasklane_core::store::{RunFilter, TaskFilter, WriteStore};
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use super::super::{PgOptions, PgStore};

impl PgStore {
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut dyn WriteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.write_sized(0, f).await
    }
}

/// A scratch database, dropped with everything connected to it when the test ends.
struct Scratch {
    admin_url: String,
    url: String,
    name: String,
    store: Option<PgStore>,
}

fn with_url(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{db}{query}")
}

/// Runs `f` on a thread of its own: the synchronous client must not block a runtime thread.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

impl Scratch {
    /// Statements on the scratch database through a connection of its own, every value as text.
    fn rows(&self, sql: &str) -> Vec<String> {
        let url = self.url.clone();
        let sql = sql.to_string();
        off_runtime(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut rows: Vec<String> = client
                .simple_query(&sql)
                .unwrap()
                .into_iter()
                .filter_map(|m| match m {
                    postgres::SimpleQueryMessage::Row(r) => Some(
                        (0..r.len())
                            .map(|i| r.get(i).unwrap_or("NULL").to_string())
                            .collect::<Vec<_>>()
                            .join("|"),
                    ),
                    _ => None,
                })
                .collect();
            rows.sort();
            rows
        })
    }

    fn reopen(&self) -> PgStore {
        let url = self.url.clone();
        off_runtime(move || PgStore::open(PgOptions::new(url)).unwrap())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let store = self.store.take();
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        off_runtime(move || {
            if let Some(store) = store {
                store.shutdown();
                drop(store);
            }
            let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        });
    }
}

async fn pg_store() -> Option<(Scratch, PgStore)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let admin_url = std::env::var("TASKLANE_TEST_DATABASE_URL").ok()?;
    let name = format!(
        "tasklane_pga_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let url = with_url(&admin_url, &name);
    let (admin, n) = (admin_url.clone(), name.clone());
    off_runtime(move || {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"))
            .unwrap();
        client
            .batch_execute(&format!("CREATE DATABASE {n}"))
            .unwrap();
    });
    // Guards the database from here on, even if opening the store fails.
    let mut scratch = Scratch {
        admin_url,
        url,
        name,
        store: None,
    };
    let store = scratch.reopen();
    scratch.store = Some(store.clone());
    Some((scratch, store))
}

macro_rules! pg_store {
    () => {
        match pg_store().await {
            Some(pair) => pair,
            None => {
                eprintln!("TASKLANE_TEST_DATABASE_URL is not set: skipped");
                return;
            }
        }
    };
}

fn task(id: &str, at: i64) -> Task {
    Task {
        id: id.to_string(),
        identifier: None,
        scope: Scope::Global,
        workspace_id: None,
        parent_task_id: None,
        network_channel: None,
        title: format!("title of {id}"),
        description: None,
        priority: Priority::Medium,
        max_attempts: 3,
        auto_enqueue_on_ready: false,
        status: TaskStatus::Ready,
        approval_policy: ApprovalPolicy::None,
        approval_state: ApprovalState::NotRequired,
        owner: None,
        current_run_id: None,
        latest_event_seq: 0,
        created_by: Ref::new("human", "local-user"),
        origin: Ref::new("http", "tasks.create"),
        created_at: Ts(at),
        updated_at: Ts(at),
        closed_at: None,
        last_activity_at: Ts(at),
        metadata: None,
        required_capabilities: vec![],
        preferred_capabilities: vec![],
    }
}

fn full_task(id: &str) -> Task {
    Task {
        identifier: Some("ENG-1".into()),
        scope: Scope::Workspace,
        workspace_id: Some("ws/1".into()),
        network_channel: Some("chan-1".into()),
        description: Some("described".into()),
        priority: Priority::Urgent,
        max_attempts: 7,
        auto_enqueue_on_ready: true,
        status: TaskStatus::Blocked,
        approval_policy: ApprovalPolicy::Manual,
        approval_state: ApprovalState::Pending,
        owner: Some(Ref::new("pool", "gpu")),
        current_run_id: Some("run-x".into()),
        closed_at: Some(Ts(77)),
        metadata: Some(json!({"a": [1, 2, {"b": null}]})),
        required_capabilities: vec!["rust".into(), "linux".into()],
        preferred_capabilities: vec!["fast".into()],
        ..task(id, 1_000)
    }
}

fn run(id: &str, task_id: &str, status: RunStatus, queued_at: i64) -> Run {
    Run {
        id: id.to_string(),
        task_id: task_id.to_string(),
        status,
        attempt: 1,
        claimed_by: None,
        session_id: None,
        origin: Ref::new("http", "tasks.enqueue_run"),
        idempotency_key: None,
        network_channel: None,
        coordination_channel_id: None,
        claim_token_hash: None,
        lease_until: None,
        heartbeat_at: None,
        lease_expirations: 0,
        queued_at: Ts(queued_at),
        claimed_at: None,
        started_at: None,
        ended_at: None,
        error: None,
        metadata: None,
        result: None,
        required_capabilities: vec![],
        preferred_capabilities: vec![],
        priority: Priority::Medium,
        claim_idempotency_key: None,
        session_token: None,
        claim_audience: None,
    }
}

fn event(id: &str, task_id: &str, at: i64) -> NewEvent {
    NewEvent {
        id: id.to_string(),
        task_id: task_id.to_string(),
        run_id: None,
        event_type: "task.created",
        actor: Ref::new("human", "local-user"),
        origin: Ref::new("http", "tasks.create"),
        payload: json!({"n": at}),
        timestamp: Ts(at),
    }
}

fn blocks(task_id: &str, on: &str, at: i64) -> Dependency {
    Dependency {
        task_id: task_id.into(),
        depends_on_task_id: on.into(),
        kind: "blocks",
        created_at: Ts(at),
    }
}

async fn insert(store: &PgStore, tasks: Vec<Task>) {
    store
        .write(move |w| tasks.iter().try_for_each(|t| w.insert_task(t)))
        .await
        .unwrap();
}

async fn get_task(store: &PgStore, id: &str) -> Option<Task> {
    let id = id.to_string();
    store.read(move |r| r.task(&id)).await.unwrap()
}

async fn list(store: &PgStore, filter: TaskFilter) -> Vec<String> {
    store
        .read(move |r| r.list_tasks(&filter))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Occupies the writer until the returned sender is used (or dropped), so the commands queued
/// meanwhile are drained into one batch.
async fn hold_writer(store: &PgStore) -> (mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let s = store.clone();
    let handle = tokio::spawn(async move {
        s.write(move |_| {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
            Ok(())
        })
        .await
    });
    tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
        .await
        .unwrap();
    (release_tx, handle)
}

async fn wait_queued(store: &PgStore, n: usize) {
    for _ in 0..500 {
        if store.queued_writes() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("queue never reached {n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn records_round_trip() {
    let (_db, store) = pg_store!();
    let mut minimal = task("task-min", 5);
    minimal.metadata = Some(serde_json::Value::Null);
    let full = full_task("task-full");
    let mut r = run("run-1", "task-full", RunStatus::Running, 1_000);
    r.claimed_by = Some(Ref::new("agent_session", "s1"));
    r.session_id = Some("s1".into());
    r.idempotency_key = Some("k".into());
    r.network_channel = Some("c".into());
    r.coordination_channel_id = Some("coord-run-1".into());
    r.claim_token_hash = Some("sha256:ab".into());
    r.lease_until = Some(Ts(9_000));
    r.heartbeat_at = Some(Ts(1_500));
    r.lease_expirations = 2;
    r.claimed_at = Some(Ts(1_100));
    r.started_at = Some(Ts(1_200));
    r.error = Some("oops".into());
    r.metadata = Some(serde_json::Value::Null);
    r.result = Some(json!({"ok": true}));
    r.required_capabilities = vec!["rust".into()];
    r.preferred_capabilities = vec!["x".into(), "y".into()];
    let bare = run("run-2", "task-min", RunStatus::Queued, 6);
    let (t1, t2, r1, r2) = (minimal.clone(), full.clone(), r.clone(), bare.clone());
    store
        .write(move |w| {
            w.insert_task(&t1)?;
            w.insert_task(&t2)?;
            w.insert_run(&r1)?;
            w.insert_run(&r2)
        })
        .await
        .unwrap();

    let (got_min, got_full, got_r, got_bare) = store
        .read(|r| {
            Ok((
                r.task("task-min")?,
                r.task("task-full")?,
                r.run("run-1")?,
                r.run("run-2")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        got_min,
        Some(Task {
            last_activity_at: Ts(6),
            ..minimal
        })
    );
    // The run's activity (its start at 1_200) raised the task's.
    assert_eq!(
        got_full,
        Some(Task {
            last_activity_at: Ts(1_200),
            ..full
        })
    );
    assert_eq!(got_r, Some(r));
    assert_eq!(got_bare, Some(bare));
    assert_eq!(store.read(|r| r.task("nope")).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn group_commit_rolls_back_failing_and_panicking_commands_alone() {
    let (_db, store) = pg_store!();
    let (release, blocker) = hold_writer(&store).await;
    let commits_before = store.commits();

    let mut handles = Vec::new();
    for (i, id) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
        let s = store.clone();
        let t = task(id, 10 + i as i64);
        handles.push(tokio::spawn(async move {
            s.write(move |w| {
                w.insert_task(&t)?;
                w.append_event(&event(&format!("evt-{}", t.id), &t.id, 20))?;
                match t.id.as_str() {
                    "b" => Err(Error::conflict("nope", "b fails")),
                    "d" => panic!("d panics"),
                    _ => Ok(t.id.clone()),
                }
            })
            .await
        }));
        wait_queued(&store, i + 1).await;
    }
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();

    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    assert_eq!(results[0].as_ref().unwrap(), "a");
    assert!(matches!(
        &results[1],
        Err(Error::Conflict { code: "nope", .. })
    ));
    assert_eq!(results[2].as_ref().unwrap(), "c");
    assert!(matches!(&results[3], Err(Error::Storage(m)) if m == "internal panic"));
    assert_eq!(results[4].as_ref().unwrap(), "e");
    // The blocker's transaction and then one transaction for all five commands.
    assert_eq!(store.commits() - commits_before, 2);

    let ids = list(&store, TaskFilter::default()).await;
    assert_eq!(ids, vec!["e", "c", "a"]);
    // The rolled-back commands' sequences were reused within the batch; none is missing.
    let seqs: Vec<i64> = store
        .read(|r| {
            let mut s = Vec::new();
            for id in ["a", "c", "e"] {
                s.push(r.task(id)?.unwrap().latest_event_seq);
            }
            Ok(s)
        })
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(*store.committed_sequence().borrow(), 3);

    // The writer is healthy afterwards.
    insert(&store, vec![task("f", 1)]).await;
}

async fn insert_result(store: &PgStore, t: Task) -> Result<()> {
    store.write(move |w| w.insert_task(&t)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn events_get_increasing_sequences() {
    let (_db, store) = pg_store!();
    let mut watch = store.committed_sequence();
    assert_eq!(*watch.borrow_and_update(), 0);
    insert(&store, vec![task("t1", 100), task("t2", 100)]).await;

    let seqs = store
        .write(|w| {
            Ok(vec![
                w.append_event(&event("e1", "t1", 200))?,
                w.append_event(&event("e2", "t2", 150))?,
                w.append_event(&event("e3", "t1", 50))?,
            ])
        })
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), 3);

    // A failing command's events do not move the watch.
    let err = store
        .write(|w| {
            w.append_event(&event("e4", "t2", 300))?;
            Err::<(), _>(Error::validation("no"))
        })
        .await;
    assert!(err.is_err());
    assert!(!watch.has_changed().unwrap());

    let t1 = get_task(&store, "t1").await.unwrap();
    assert_eq!(t1.latest_event_seq, 3);
    // Raised to the newest event, never lowered by the older one appended last.
    assert_eq!(t1.last_activity_at, Ts(200));
    let t2 = get_task(&store, "t2").await.unwrap();
    assert_eq!((t2.latest_event_seq, t2.last_activity_at), (2, Ts(150)));

    let (asc, desc, after, limited) = store
        .read(|r| {
            Ok((
                r.events_of_task("t1", 0, None, false)?,
                r.events_of_task("t1", 0, None, true)?,
                r.events_of_task("t1", 1, Some(0), false)?,
                r.events_of_task("t1", 0, Some(1), true)?,
            ))
        })
        .await
        .unwrap();
    let seq =
        |v: &Vec<tasklane_core::model::Event>| v.iter().map(|e| e.sequence).collect::<Vec<_>>();
    assert_eq!(seq(&asc), vec![1, 3]);
    assert_eq!(seq(&desc), vec![3, 1]);
    assert_eq!(seq(&after), vec![3]);
    assert_eq!(seq(&limited), vec![3]);
    assert_eq!(asc[0].payload, json!({"n": 200}));
    assert_eq!(asc[0].event_type, "task.created");

    // update_task leaves storage-owned columns alone.
    let mut stale = task("t1", 10);
    stale.title = "renamed".into();
    store.write(move |w| w.update_task(&stale)).await.unwrap();
    let t1 = get_task(&store, "t1").await.unwrap();
    assert_eq!(
        (
            t1.title.as_str(),
            t1.latest_event_seq,
            t1.last_activity_at,
            t1.updated_at
        ),
        ("renamed", 3, Ts(200), Ts(10))
    );

    // A reopened store's watch starts at the end of the log.
    let reopened = _db.reopen();
    let seen = *reopened.committed_sequence().borrow();
    off_runtime(move || reopened.shutdown());
    assert_eq!(seen, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_writes_raise_task_activity() {
    let (_db, store) = pg_store!();
    insert(&store, vec![task("t", 100)]).await;
    let mut r = run("r", "t", RunStatus::Queued, 150);
    let r1 = r.clone();
    store.write(move |w| w.insert_run(&r1)).await.unwrap();
    assert_eq!(
        get_task(&store, "t").await.unwrap().last_activity_at,
        Ts(150)
    );
    r.status = RunStatus::Completed;
    r.claimed_at = Some(Ts(160));
    r.ended_at = Some(Ts(400));
    let r2 = r.clone();
    // Within the command the raise (written when the command ends) is already visible, and a
    // list read in it sees the same order every later reader will.
    let (seen, listed) = store
        .write(move |w| {
            w.update_run(&r2)?;
            w.append_event(&event("e1", "t", 390))?;
            let seen = w.task("t")?.unwrap();
            let listed = w.children_of("none")?.len();
            Ok((seen, listed))
        })
        .await
        .unwrap();
    assert_eq!((seen.last_activity_at, seen.latest_event_seq), (Ts(400), 1));
    assert_eq!(listed, 0);
    let stored = get_task(&store, "t").await.unwrap();
    assert_eq!(
        (stored.last_activity_at, stored.latest_event_seq),
        (Ts(400), 1)
    );
    let mut newer = task("t", 300);
    newer.created_at = Ts(100);
    store.write(move |w| w.update_task(&newer)).await.unwrap();
    assert_eq!(
        get_task(&store, "t").await.unwrap().last_activity_at,
        Ts(400)
    );

    let missing = run("ghost", "t", RunStatus::Queued, 1);
    let err = store.write(move |w| w.update_run(&missing)).await;
    assert!(matches!(
        err,
        Err(Error::NotFound {
            code: "run_not_found",
            ..
        })
    ));
    let err = store.write(|w| w.update_task(&task("ghost", 1))).await;
    assert!(matches!(
        err,
        Err(Error::NotFound {
            code: "task_not_found",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_are_conflicts() {
    let (_db, store) = pg_store!();
    insert(&store, vec![task("a", 1), task("b", 1)]).await;
    match insert_result(&store, task("a", 2)).await {
        Err(Error::Conflict { code, message }) => {
            assert_eq!(code, "duplicate_task");
            assert_eq!(message, "task a already exists");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    store
        .write(|w| w.insert_dependency(&blocks("a", "b", 1)))
        .await
        .unwrap();
    let err = store
        .write(|w| w.insert_dependency(&blocks("a", "b", 2)))
        .await;
    assert!(matches!(
        err,
        Err(Error::Conflict {
            code: "duplicate_dependency",
            ..
        })
    ));
    let removed = store
        .write(|w| {
            Ok((
                w.delete_dependency("a", "b")?,
                w.delete_dependency("a", "b")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(removed, (true, false));

    let record = IdempotencyRecord {
        key: "k".into(),
        origin: Ref::new("http", "tasks.start"),
        task_id: "a".into(),
        run_id: "r".into(),
        created_at: Ts(5),
    };
    let (r1, r2) = (record.clone(), record.clone());
    store
        .write(move |w| w.insert_idempotency_record(&r1))
        .await
        .unwrap();
    let err = store.write(move |w| w.insert_idempotency_record(&r2)).await;
    assert!(matches!(err, Err(Error::Conflict { .. })));
    let origin = record.origin.clone();
    let got = store
        .read(move |r| {
            Ok((
                r.idempotency_record("k", &origin)?,
                r.idempotency_record("k", &Ref::new("http", "tasks.enqueue_run"))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(got, (Some(record), None));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_cascades_to_everything_of_the_task() {
    let (_db, store) = pg_store!();
    insert(&store, vec![task("x", 1), task("y", 1), task("z", 1)]).await;
    store
        .write(|w| {
            w.insert_run(&run("rx", "x", RunStatus::Completed, 2))?;
            w.insert_run(&run("ry", "y", RunStatus::Queued, 2))?;
            w.insert_dependency(&blocks("x", "y", 3))?;
            w.insert_dependency(&blocks("z", "x", 3))?;
            w.insert_dependency(&blocks("z", "y", 4))?;
            w.append_event(&event("ex1", "x", 5))?;
            w.append_event(&event("ey1", "y", 5))?;
            w.append_event(&event("ex2", "x", 6))?;
            w.insert_idempotency_record(&IdempotencyRecord {
                key: "k".into(),
                origin: Ref::new("http", "tasks.start"),
                task_id: "x".into(),
                run_id: "rx".into(),
                created_at: Ts(2),
            })
        })
        .await
        .unwrap();

    store.write(|w| w.delete_task("x")).await.unwrap();
    // Deleting what is not there is not an error.
    store.write(|w| w.delete_task("x")).await.unwrap();

    let (task_x, run_x, events_x, deps_z, dependents_y, record, run_y, events_y) = store
        .read(|r| {
            Ok((
                r.task("x")?,
                r.run("rx")?,
                r.events_of_task("x", 0, None, false)?,
                r.dependencies_of("z")?,
                r.dependents_of("y")?,
                r.idempotency_record("k", &Ref::new("http", "tasks.start"))?,
                r.run("ry")?,
                r.events_of_task("y", 0, None, false)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(task_x, None);
    assert_eq!(run_x, None);
    assert!(events_x.is_empty());
    assert_eq!(deps_z, vec![blocks("z", "y", 4)]);
    assert_eq!(dependents_y, vec!["z".to_string()]);
    assert_eq!(record, None);
    assert!(run_y.is_some());
    assert_eq!(events_y.len(), 1);

    // Sequences of deleted events are never handed out again.
    let seq = store
        .write(|w| w.append_event(&event("ey2", "y", 7)))
        .await
        .unwrap();
    assert_eq!(seq, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_tasks_filters_orders_and_escapes() {
    let (_db, store) = pg_store!();
    let mut tasks = Vec::new();
    let mut add = |id: &str, activity: i64, f: &dyn Fn(&mut Task)| {
        let mut t = task(id, activity);
        f(&mut t);
        tasks.push(t);
    };
    add("t-pct", 90, &|t| t.title = "100% DONE".into());
    add("t-plain", 80, &|t| t.title = "100 done".into());
    add("t-under", 70, &|t| t.title = "a_b".into());
    add("t-axb", 60, &|t| t.title = "axb".into());
    add("t-slash", 50, &|t| {
        t.title = "other".into();
        t.identifier = Some(r"back\slash".into());
    });
    add("t-draft", 95, &|t| {
        t.status = TaskStatus::Draft;
        t.title = "draft done".into();
    });
    // Ties on activity are broken by updated_at, then created_at, then id (all descending).
    add("tie-a", 40, &|t| t.updated_at = Ts(30));
    add("tie-b", 40, &|t| {
        t.updated_at = Ts(30);
        t.created_at = Ts(20);
    });
    add("tie-c", 40, &|t| {
        t.updated_at = Ts(30);
        t.created_at = Ts(20);
    });
    add("tie-d", 40, &|t| t.updated_at = Ts(35));
    add("ws", 10, &|t| {
        t.scope = Scope::Workspace;
        t.workspace_id = Some("w1".into());
        t.priority = Priority::High;
        t.approval_state = ApprovalState::Approved;
        t.owner = Some(Ref::new("agent_session", "s1"));
        t.network_channel = Some("net".into());
    });
    add("child", 5, &|t| t.parent_task_id = Some("ws".into()));
    // Parents first, for the foreign key.
    tasks.sort_by_key(|t| t.parent_task_id.is_some());
    insert(&store, tasks).await;

    let all = list(&store, TaskFilter::default()).await;
    assert_eq!(
        all,
        vec![
            "t-pct", "t-plain", "t-under", "t-axb", "t-slash", "tie-d", "tie-a", "tie-c", "tie-b",
            "ws", "child"
        ]
    );
    let with_drafts = list(
        &store,
        TaskFilter {
            include_drafts: true,
            limit: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(with_drafts, vec!["t-draft", "t-pct"]);
    let drafts = list(
        &store,
        TaskFilter {
            status: Some(TaskStatus::Draft),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(drafts, vec!["t-draft"]);
    assert_eq!(
        list(
            &store,
            TaskFilter {
                limit: Some(0),
                ..Default::default()
            }
        )
        .await
        .len(),
        all.len()
    );

    let query = |q: &str| TaskFilter {
        query: Some(q.to_string()),
        ..Default::default()
    };
    assert_eq!(list(&store, query("done")).await, vec!["t-pct", "t-plain"]);
    assert_eq!(list(&store, query("0% d")).await, vec!["t-pct"]);
    assert_eq!(list(&store, query("a_b")).await, vec!["t-under"]);
    assert_eq!(list(&store, query("K\\S")).await, vec!["t-slash"]);
    assert_eq!(list(&store, query("%")).await, vec!["t-pct"]);

    let only_ws = TaskFilter {
        scope: Some(Scope::Workspace),
        workspace_id: Some("w1".into()),
        status: Some(TaskStatus::Ready),
        priority: Some(Priority::High),
        approval_state: Some(ApprovalState::Approved),
        owner_kind: Some(OwnerKind::AgentSession),
        owner_ref: Some("s1".into()),
        network_channel: Some("net".into()),
        query: Some("TITLE OF".into()),
        ..Default::default()
    };
    assert_eq!(list(&store, only_ws.clone()).await, vec!["ws"]);
    let wrong_owner = TaskFilter {
        owner_ref: Some("s2".into()),
        ..only_ws
    };
    assert!(list(&store, wrong_owner).await.is_empty());
    let children = TaskFilter {
        parent_task_id: Some("ws".into()),
        ..Default::default()
    };
    assert_eq!(list(&store, children).await, vec!["child"]);

    let (children, counts) = store
        .read(|r| {
            Ok((
                r.children_of("ws")?,
                r.child_counts(&["ws".to_string(), "child".to_string()])?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(children.len(), 1);
    assert_eq!(counts.get("ws"), Some(&1));
    assert_eq!(counts.get("child"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_id_lists_are_chunked() {
    let (_db, store) = pg_store!();
    let parents: Vec<Task> = (0..1_200).map(|i| task(&format!("p{i:04}"), i)).collect();
    insert(&store, parents).await;
    store
        .write(|w| {
            for i in 0..1_200 {
                let mut child = task(&format!("c{i:04}"), 5_000 + i);
                child.parent_task_id = Some(format!("p{i:04}"));
                w.insert_task(&child)?;
                w.insert_run(&run(&format!("r{i:04}"), &child.id, RunStatus::Queued, i))?;
                w.insert_dependency(&blocks(&child.id, &format!("p{i:04}"), 10_000 - i))?;
            }
            Ok(())
        })
        .await
        .unwrap();

    let mut ids: Vec<String> = (0..1_200).map(|i| format!("p{i:04}")).collect();
    ids.push("missing".into());
    ids.push("p0000".into());
    let child_ids: Vec<String> = (0..1_200).map(|i| format!("c{i:04}")).collect();
    let (tasks, counts, runs, deps) = store
        .read(move |r| {
            Ok((
                r.tasks_by_ids(&ids)?,
                r.child_counts(&ids)?,
                r.open_runs_of_tasks(&child_ids)?,
                r.dependencies_of_tasks(&child_ids)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1_200);
    assert_eq!(tasks[0].id, "p1199");
    assert_eq!(tasks[1_199].id, "p0000");
    assert_eq!(counts.len(), 1_200);
    assert!(counts.values().all(|&n| n == 1));
    assert_eq!(runs.len(), 1_200);
    assert_eq!(
        (runs[0].id.as_str(), runs[1_199].id.as_str()),
        ("r1199", "r0000")
    );
    assert_eq!(deps.len(), 1_200);
    assert_eq!(
        (deps[0].task_id.as_str(), deps[1_199].task_id.as_str()),
        ("c1199", "c0000")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn open_and_active_runs_follow_the_model() {
    let (_db, store) = pg_store!();
    let statuses = RunStatus::ALL.to_vec();
    store
        .write(move |w| {
            for (i, status) in statuses.iter().enumerate() {
                let t = task(&format!("t{i}"), 1);
                w.insert_task(&t)?;
                let mut r = run(&format!("r-{status}"), &t.id, *status, i as i64);
                r.session_id = Some(format!("s-{status}"));
                w.insert_run(&r)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let ids: Vec<String> = (0..RunStatus::ALL.len()).map(|i| format!("t{i}")).collect();
    let (open, active) = store
        .read(move |r| {
            let open = r.open_runs_of_tasks(&ids)?;
            let mut active = Vec::new();
            for status in RunStatus::ALL {
                active.push(
                    r.active_run_of_session(&format!("s-{status}"), None)?
                        .is_some(),
                );
            }
            Ok((open, active))
        })
        .await
        .unwrap();
    let mut open_statuses: Vec<RunStatus> = open.iter().map(|r| r.status).collect();
    open_statuses.reverse();
    let expected: Vec<RunStatus> = RunStatus::ALL
        .iter()
        .copied()
        .filter(|s| s.is_open())
        .collect();
    assert_eq!(open_statuses, expected);
    let expected_active: Vec<bool> = RunStatus::ALL.iter().map(|s| s.is_active()).collect();
    assert_eq!(active, expected_active);

    let filtered = store
        .read(|r| {
            Ok((
                r.list_runs(
                    "t0",
                    &RunFilter {
                        status: Some(RunStatus::Queued),
                        session_id: Some("s-queued".into()),
                        after: None,
                        limit: Some(5),
                    },
                )?,
                r.list_runs(
                    "t0",
                    &RunFilter {
                        status: Some(RunStatus::Running),
                        ..Default::default()
                    },
                )?,
                r.runs_of_task("t0")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(filtered.0.len(), 1);
    assert!(filtered.1.is_empty());
    assert_eq!(filtered.2.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_and_dependencies_are_ordered() {
    let (_db, store) = pg_store!();
    insert(
        &store,
        vec![task("t", 1), task("b1", 1), task("b2", 1), task("b3", 1)],
    )
    .await;
    store
        .write(|w| {
            w.insert_run(&run("r-b", "t", RunStatus::Canceled, 10))?;
            w.insert_run(&run("r-a", "t", RunStatus::Canceled, 10))?;
            w.insert_run(&run("r-c", "t", RunStatus::Queued, 20))?;
            w.insert_dependency(&blocks("t", "b3", 1))?;
            w.insert_dependency(&blocks("t", "b2", 2))?;
            w.insert_dependency(&blocks("t", "b1", 2))
        })
        .await
        .unwrap();
    let (runs, limited, deps) = store
        .read(|r| {
            Ok((
                r.runs_of_task("t")?,
                r.list_runs(
                    "t",
                    &RunFilter {
                        limit: Some(1),
                        ..Default::default()
                    },
                )?,
                r.dependencies_of("t")?,
            ))
        })
        .await
        .unwrap();
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec!["r-c", "r-b", "r-a"]);
    assert_eq!(limited.len(), 1);
    let deps: Vec<&str> = deps.iter().map(|d| d.depends_on_task_id.as_str()).collect();
    assert_eq!(deps, vec!["b3", "b1", "b2"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_sessions_are_touched() {
    let (_db, store) = pg_store!();
    store
        .write(|w| w.touch_agent_session("s1", None, Some("claude"), Ts(10)))
        .await
        .unwrap();
    store
        .write(|w| w.touch_agent_session("s1", None, None, Ts(20)))
        .await
        .unwrap();
    let got = store
        .read(|r| r.agent_session("s1", None))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.agent_name.as_deref(), Some("claude"));
    assert_eq!((got.first_seen_at, got.last_seen_at), (Ts(10), Ts(20)));
    assert_eq!(got.token_name, None);
    assert_eq!(
        store.read(|r| r.agent_session("s2", None)).await.unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_of_different_tokens_are_different_sessions() {
    let (_db, store) = pg_store!();
    store
        .write(|w| {
            w.touch_agent_session("s1", Some("pool-a"), Some("a"), Ts(10))?;
            w.touch_agent_session("s1", Some("pool-b"), Some("b"), Ts(20))?;
            let t = task("t", 1);
            w.insert_task(&t)?;
            let mut r = run("r", &t.id, RunStatus::Claimed, 1);
            r.session_id = Some("s1".into());
            r.session_token = Some("pool-a".into());
            w.insert_run(&r)
        })
        .await
        .unwrap();
    let (a, b, none, runs_a, runs_b) = store
        .read(|r| {
            Ok((
                r.agent_session("s1", Some("pool-a"))?.unwrap(),
                r.agent_session("s1", Some("pool-b"))?.unwrap(),
                r.agent_session("s1", None)?,
                r.active_run_of_session("s1", Some("pool-a"))?,
                r.active_runs_of_session("s1", Some("pool-b"))?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(
        (a.agent_name.as_deref(), a.first_seen_at),
        (Some("a"), Ts(10))
    );
    assert_eq!(
        (b.agent_name.as_deref(), b.first_seen_at),
        (Some("b"), Ts(20))
    );
    assert_eq!(b.token_name.as_deref(), Some("pool-b"));
    assert_eq!(none, None);
    assert_eq!(runs_a.as_deref(), Some("r"));
    assert!(runs_b.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn task_pages_resume_after_their_key_through_an_index_range() {
    let (_db, store) = pg_store!();
    let mut tasks = vec![task("p", 50)];
    for (id, activity, updated, created) in [
        ("a", 40, 30, 20),
        ("b", 40, 30, 20),
        ("c", 40, 30, 10),
        ("d", 40, 35, 10),
        ("e", 45, 10, 10),
        ("f", 5, 5, 5),
    ] {
        let mut t = task(id, activity);
        t.updated_at = Ts(updated);
        t.created_at = Ts(created);
        t.parent_task_id = Some("p".into());
        tasks.push(t);
    }
    insert(&store, tasks).await;
    let all: Vec<Task> = store
        .read(|r| r.list_tasks(&TaskFilter::default()))
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["p", "e", "d", "b", "a", "c", "f"]);
    // From every position, the rest of the list follows exactly, ties included.
    for (i, t) in all.iter().enumerate() {
        let filter = TaskFilter {
            after: Some(TaskKey::of(t)),
            ..Default::default()
        };
        assert_eq!(
            list(&store, filter).await,
            ids[i + 1..].to_vec(),
            "after {}",
            t.id
        );
    }

    let key = TaskKey::of(&all[2]);
    let plans = store
        .read_db(move |db| {
            // A table this small is cheaper to scan; the question is whether the index serves.
            db.conn.batch("SET LOCAL enable_seqscan = off")?;
            let after = |f: TaskFilter| TaskFilter {
                after: Some(key.clone()),
                limit: Some(3),
                ..f
            };
            let mut plans = Vec::new();
            for filter in [
                after(TaskFilter::default()),
                after(TaskFilter {
                    parent_task_id: Some("p".into()),
                    ..Default::default()
                }),
            ] {
                plans.push(plan_of_list(db, &filter)?);
            }
            Ok(plans)
        })
        .await
        .unwrap();
    let range = "(ROW(last_activity_at, updated_at, created_at, id) < ROW(";
    assert!(
        plans[0].contains("Index Scan Backward using tasks_list_order") && plans[0].contains(range),
        "{}",
        plans[0]
    );
    assert!(
        plans[1].contains("Index Scan Backward using tasks_parent") && plans[1].contains(range),
        "{}",
        plans[1]
    );
    for plan in &plans {
        assert!(!plan.contains("Sort"), "no sort of the whole list: {plan}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_stay_equal_to_a_recount_through_every_kind_of_write() {
    let (conn, store) = pg_store!();
    let b = Task {
        owner: Some(Ref::new("pool", "gpu")),
        ..full_task("b")
    };
    insert(&store, vec![task("a", 1), b, task("c", 1)]).await;
    store
        .write(|w| {
            w.insert_dependency(&blocks("b", "a", 2))?;
            w.insert_dependency(&blocks("c", "a", 2))?;
            w.insert_dependency(&blocks("c", "b", 2))?;
            w.insert_run(&run("a1", "a", RunStatus::Queued, 10))?;
            w.insert_run(&run("b1", "b", RunStatus::Queued, 10))
        })
        .await
        .unwrap();
    assert_counters_match_a_recount(&conn);
    assert_eq!(
        conn.rows("SELECT SUM(n) FROM obs_task_counts"),
        ["3"],
        "the counters were written"
    );

    // A claim, start and completion, and a failure followed by a retry: some in one batch.
    let (release, held) = hold_writer(&store).await;
    let claim = |id: &'static str, task: &'static str, status: RunStatus| {
        let s = store.clone();
        tokio::spawn(async move {
            s.write(move |w| {
                let mut r = w.run(id)?.unwrap();
                r.status = status;
                r.claimed_at = Some(Ts(15));
                if status != RunStatus::Claimed {
                    r.started_at = Some(Ts(18));
                }
                w.update_run(&r)?;
                let mut t = w.task(task)?.unwrap();
                t.status = TaskStatus::InProgress;
                w.update_task(&t)
            })
            .await
        })
    };
    let writes = vec![
        claim("a1", "a", RunStatus::Claimed),
        claim("b1", "b", RunStatus::Failed),
    ];
    // A command that fails after writing: its counter changes go with its savepoint.
    let s = store.clone();
    let failing = tokio::spawn(async move {
        s.write(|w| {
            w.insert_run(&run("lost", "c", RunStatus::Failed, 11))?;
            Err::<(), _>(Error::validation("changed my mind"))
        })
        .await
    });
    wait_queued(&store, 3).await;
    release.send(()).unwrap();
    held.await.unwrap().unwrap();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    assert!(failing.await.unwrap().is_err());
    assert_counters_match_a_recount(&conn);

    store
        .write(|w| {
            let mut a1 = w.run("a1")?.unwrap();
            a1.status = RunStatus::Completed;
            a1.started_at = Some(Ts(20));
            w.update_run(&a1)?;
            let mut b2 = run("b2", "b", RunStatus::Queued, 30);
            b2.attempt = 2;
            w.insert_run(&b2)?;
            // New dimensions carry the task's runs along.
            let mut b = w.task("b")?.unwrap();
            b.owner = Some(Ref::new("agent_session", "s-1"));
            b.network_channel = None;
            b.approval_state = ApprovalState::Approved;
            w.update_task(&b)
        })
        .await
        .unwrap();
    assert_counters_match_a_recount(&conn);

    // Removing edges and deleting a blocker with dependents and runs.
    store
        .write(|w| {
            w.delete_dependency("c", "b")?;
            w.delete_task("a")
        })
        .await
        .unwrap();
    assert_counters_match_a_recount(&conn);
    let kept = conn.rows("SELECT id, dependency_count FROM tasks");
    assert_eq!(kept, vec!["b|0", "c|0"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_item_undoes_only_itself_and_publishes_no_sequence_of_it() {
    let (db, store) = pg_store!();
    insert(&store, vec![task("a", 1), task("b", 1)]).await;
    let kept = store
        .write(|w| {
            w.begin_item()?;
            w.append_event(&event("e-1", "a", 2))?;
            w.end_item(true)?;
            w.begin_item()?;
            w.append_event(&event("e-2", "b", 3))?;
            w.insert_run(&run("r-b", "b", RunStatus::Failed, 3))?;
            w.update_task(&Task {
                title: "renamed".into(),
                ..task("b", 1)
            })?;
            w.end_item(false)?;
            // An item cannot nest, and cannot end twice.
            w.begin_item()?;
            assert!(w.begin_item().is_err());
            w.end_item(true)?;
            assert!(w.end_item(true).is_err());
            Ok(())
        })
        .await;
    kept.unwrap();
    assert_eq!(get_task(&store, "a").await.unwrap().latest_event_seq, 1);
    let b = get_task(&store, "b").await.unwrap();
    assert_eq!((b.latest_event_seq, b.title.as_str()), (0, "title of b"));
    // Its counter changes went with it.
    assert_counters_match_a_recount(&db);
    // The rolled-back event's sequence was never published and is the next one used.
    assert_eq!(*store.committed_sequence().borrow(), 1);
    let seq = store
        .write(|w| w.append_event(&event("e-3", "b", 4)))
        .await
        .unwrap();
    assert_eq!(seq, 2);
}

/// Runs of one task each, with the given audience, priority and capabilities.
fn class_run(
    id: &str,
    audience: Option<&str>,
    priority: Priority,
    required: &[&str],
    queued_at: i64,
) -> (Task, Run) {
    let t = task(&format!("t-{id}"), queued_at);
    let r = Run {
        priority,
        required_capabilities: required.iter().map(|c| c.to_string()).collect(),
        claim_audience: audience.map(str::to_string),
        ..run(id, &t.id, RunStatus::Queued, queued_at)
    };
    (t, r)
}

async fn insert_runs(store: &PgStore, rows: Vec<(Task, Run)>) {
    store
        .write(move |w| {
            rows.iter().try_for_each(|(t, r)| {
                w.insert_task(t)?;
                w.insert_run(r)
            })
        })
        .await
        .unwrap();
}

async fn heads(store: &PgStore, audience: &str, min: Priority) -> Vec<String> {
    let audience = audience.to_string();
    let mut ids: Vec<String> = store
        .read(move |r| r.claim_class_heads(&audience, min))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_class_heads_are_the_oldest_run_of_each_class_of_the_audience() {
    use Priority::{Low, Medium, Urgent};
    let (_db, store) = pg_store!();
    let g = Some("g|");
    insert_runs(
        &store,
        vec![
            class_run("r1", g, Medium, &[], 5),
            class_run("r2", g, Medium, &[], 3),
            // The same set of required capabilities in another order: one class.
            class_run("r3", g, Medium, &["b", "a"], 4),
            class_run("r4", g, Medium, &["a", "b"], 2),
            class_run("r5", g, Urgent, &[], 9),
            class_run("r6", g, Low, &[], 1),
            class_run("r7", Some("w:x|"), Medium, &[], 1),
            class_run("r8", None, Medium, &[], 1),
        ],
    )
    .await;
    store
        .write(|w| {
            let mut claimed = w.run("r5")?.unwrap();
            claimed.status = RunStatus::Claimed;
            w.update_run(&claimed)?;
            w.insert_run(&Run {
                status: RunStatus::Queued,
                id: "r9".into(),
                queued_at: Ts(20),
                ..claimed
            })
        })
        .await
        .unwrap();
    assert_eq!(heads(&store, "g|", Medium).await, ["r2", "r4", "r9"]);
    assert_eq!(heads(&store, "g|", Low).await, ["r2", "r4", "r6", "r9"]);
    assert_eq!(heads(&store, "w:x|", Low).await, ["r7"]);
    assert!(heads(&store, "g|pool:x", Low).await.is_empty());

    // An audience change leaves the index at once; update_run never moves it back.
    store
        .write(|w| {
            w.set_claim_audience("t-r2", None)?;
            let mut stale = w.run("r2")?.unwrap();
            stale.claim_audience = Some("g|".into());
            stale.metadata = Some(json!({"touched": true}));
            w.update_run(&stale)
        })
        .await
        .unwrap();
    assert_eq!(heads(&store, "g|", Medium).await, ["r1", "r4", "r9"]);
    let r2 = store.read(|r| r.run("r2")).await.unwrap().unwrap();
    assert_eq!(r2.claim_audience, None);

    // One seek of the claim index per class: no scan, no sort.
    let plans = store
        .read_db(|db| {
            db.conn.batch("SET LOCAL enable_seqscan = off")?;
            let next = explain(
                db,
                super::super::read::NEXT_CLASS_OF_PRIORITY_SQL,
                &[&"g|", &1_i64, &""],
            )?;
            let first = explain(
                db,
                super::super::read::FIRST_CLASS_ABOVE_PRIORITY_SQL,
                &[&"g|", &1_i64],
            )?;
            Ok([next, first])
        })
        .await
        .unwrap();
    for plan in plans {
        assert!(
            plan.contains("Index Scan using task_runs_claim_class"),
            "{plan}"
        );
        assert!(!plan.contains("Sort"), "{plan}");
    }
}

fn explain(
    db: &mut super::super::Db<'_>,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<String> {
    let rows = db.conn.query(&format!("EXPLAIN {sql}"), params)?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn plan_of_list(db: &mut super::super::Db<'_>, filter: &TaskFilter) -> Result<String> {
    super::super::read::with_task_list_query(filter, |sql, params| explain(db, sql, params))
}

/// The maintained counters and flags equal a recount from the tasks, runs and edges.
fn assert_counters_match_a_recount(db: &Scratch) {
    let dims = "t.scope, COALESCE(t.workspace_id, ''), COALESCE(t.owner_kind, ''), \
                COALESCE(t.owner_ref, ''), COALESCE(t.network_channel, ''), t.origin_kind";
    let latest_failed = "COALESCE((SELECT CASE WHEN r.status = 'failed' THEN 1 ELSE 0 END \
                         FROM task_runs r WHERE r.task_id = t.id \
                         ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1), 0)";
    let has_deps =
        "CASE WHEN EXISTS (SELECT 1 FROM task_dependencies d WHERE d.task_id = t.id) THEN 1 ELSE 0 END";
    assert_eq!(
        db.rows(&format!(
            "SELECT id, dependency_count, latest_run_failed FROM tasks t \
             WHERE dependency_count != (SELECT COUNT(*) FROM task_dependencies d WHERE d.task_id = t.id) \
                OR latest_run_failed != {latest_failed}"
        )),
        Vec::<String>::new(),
        "flags kept on tasks differ from their recount"
    );
    assert_eq!(
        db.rows(
            "SELECT scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, status, \
             approval_state, has_deps, approval_policy, latest_failed, n FROM obs_task_counts WHERE n != 0"
        ),
        db.rows(&format!(
            "SELECT {dims}, t.status, t.approval_state, {has_deps}, t.approval_policy, {latest_failed}, \
             COUNT(*) FROM tasks t GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
        )),
        "task counters"
    );
    // SQLite's MAX(NULL, 0) is NULL where GREATEST is 0: the same sums and maxima.
    let claim = "GREATEST(r.claimed_at - r.queued_at, 0)";
    let start = "GREATEST(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)";
    assert_eq!(
        db.rows(
            "SELECT scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, run_channel, \
             run_origin_kind, status, n, claim_n, claim_sum, start_n, start_sum FROM obs_run_counts \
             WHERE n != 0 OR claim_n != 0 OR claim_sum != 0 OR start_n != 0 OR start_sum != 0"
        ),
        db.rows(&format!(
            "SELECT {dims}, COALESCE(r.network_channel, ''), r.origin_kind, r.status, COUNT(*), \
             COUNT(r.claimed_at), COALESCE(SUM(CASE WHEN r.claimed_at IS NOT NULL THEN {claim} END), 0), \
             COUNT(r.started_at), \
             COALESCE(SUM(CASE WHEN r.started_at IS NOT NULL THEN {start} END), 0) \
             FROM task_runs r JOIN tasks t ON t.id = r.task_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
        )),
        "run counters"
    );
    // Maxima never decrease, so they are at least the recount's.
    assert_eq!(
        db.rows(&format!(
            "SELECT g.* FROM (SELECT {dims}, COALESCE(r.network_channel, '') AS rc, \
             r.origin_kind AS rok, r.status AS st, \
             COALESCE(MAX(CASE WHEN r.claimed_at IS NOT NULL THEN {claim} END), 0) AS m \
             FROM task_runs r JOIN tasks t ON t.id = r.task_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9) \
             AS g (s, w, ok, orf, nc, ok2, rc, rok, st, m) \
             WHERE g.m > COALESCE((SELECT c.claim_max FROM obs_run_counts c \
               WHERE (c.scope, c.workspace_id, c.owner_kind, c.owner_ref, c.network_channel, \
                      c.origin_kind, c.run_channel, c.run_origin_kind, c.status) = \
                     (g.s, g.w, g.ok, g.orf, g.nc, g.ok2, g.rc, g.rok, g.st)), 0)"
        )),
        Vec::<String>::new(),
        "claim latency maxima"
    );
}

/// Writes covering the primitives the ported tests leave out (tokens, leases, run pages,
/// audiences, activity raised by updates), with values whose order or case folding could differ
/// between the backends.
fn differential_writes(w: &mut dyn WriteStore) -> Result<()> {
    use tasklane_core::model::{ApiToken, Role};
    let mut parent = full_task("P-1");
    parent.title = "Écoute the ÉTÉ queue".into();
    parent.status = TaskStatus::Ready;
    w.insert_task(&parent)?;
    for (i, title) in [
        "été report",
        "ÉTÉ REPORT",
        "Mixed Case",
        "under_score",
        "50% off",
    ]
    .into_iter()
    .enumerate()
    {
        let mut t = task(&format!("c-{i}"), 100 + (i as i64 % 2));
        t.title = title.into();
        t.identifier = Some(format!("ID-{i}"));
        t.parent_task_id = Some("P-1".into());
        t.owner = (i % 2 == 0).then(|| Ref::new("agent_session", "s1"));
        w.insert_task(&t)?;
        w.append_event(&event(&format!("e-{i}"), &t.id, 90 + i as i64))?;
    }
    for (i, (status, lease)) in [
        (RunStatus::Claimed, Some(500)),
        (RunStatus::Running, Some(300)),
        (RunStatus::Starting, Some(300)),
        (RunStatus::Completed, Some(10)),
        (RunStatus::Queued, None),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = run(&format!("r-{i}"), "c-0", status, 200 + (i as i64 % 3));
        r.lease_until = lease.map(Ts);
        r.attempt = i as i64 + 1;
        r.session_id = Some("s1".into());
        r.claim_audience = Some("g|".into());
        r.priority = Priority::High;
        r.preferred_capabilities = vec!["z".into(), "a".into()];
        w.insert_run(&r)?;
    }
    let mut r = w.run("r-4")?.unwrap();
    r.status = RunStatus::Failed;
    r.ended_at = Some(Ts(700));
    r.error = Some("boom".into());
    r.result = Some(json!({"partial": [1, "two"]}));
    w.update_run(&r)?;
    w.set_claim_audience("c-0", Some("w:x|"))?;
    let mut t = w.task("c-1")?.unwrap();
    t.updated_at = Ts(650);
    t.status = TaskStatus::Blocked;
    t.metadata = Some(json!({"k": "v"}));
    w.update_task(&t)?;
    w.insert_dependency(&blocks("c-1", "c-2", 5))?;
    w.insert_dependency(&blocks("c-1", "c-0", 5))?;
    for (name, role) in [
        ("beta", Role::Agent),
        ("Alpha", Role::Operator),
        ("alpha", Role::Viewer),
    ] {
        w.insert_api_token(&ApiToken {
            name: name.into(),
            role,
            token_hash: format!("sha256:{name}"),
            created_at: Ts(1),
            last_used_at: None,
        })?;
    }
    w.touch_api_token("sha256:beta", Ts(40))?;
    w.touch_api_token("sha256:beta", Ts(30))?;
    w.touch_api_token("sha256:Alpha", Ts(5))?;
    assert!(w.revoke_api_token("alpha")?);
    assert!(!w.revoke_api_token("nobody")?);
    match w.insert_api_token(&ApiToken {
        name: "beta".into(),
        role: Role::Agent,
        token_hash: "sha256:other".into(),
        created_at: Ts(2),
        last_used_at: None,
    }) {
        Err(Error::Conflict {
            code: "duplicate_token",
            ..
        }) => {}
        other => panic!("expected duplicate_token, got {other:?}"),
    }
    w.touch_agent_session("s1", Some("beta"), None, Ts(3))?;
    w.touch_agent_session("s1", Some("beta"), Some("bot"), Ts(2))
}

fn differential_reads(r: &mut dyn tasklane_core::store::ReadStore) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut push = |what: &str, v: String| out.push(format!("{what}: {v}"));
    for q in ["été", "ÉTÉ", "mixed", "MIXED", "_", "%", "id-3", "é"] {
        let tasks = r.list_tasks(&TaskFilter {
            query: Some(q.into()),
            ..Default::default()
        })?;
        push(
            &format!("query {q}"),
            format!("{:?}", tasks.iter().map(|t| &t.id).collect::<Vec<_>>()),
        );
    }
    let all = r.list_tasks(&TaskFilter::default())?;
    push("all", format!("{all:?}"));
    let page = r.list_tasks(&TaskFilter {
        owner_kind: Some(OwnerKind::AgentSession),
        after: Some(TaskKey::of(&all[1])),
        limit: Some(2),
        ..Default::default()
    })?;
    push("owner page", format!("{page:?}"));
    push("children", format!("{:?}", r.children_of("P-1")?));
    let runs = r.runs_of_task("c-0")?;
    push("runs", format!("{runs:?}"));
    for run in &runs {
        let after = r.list_runs(
            "c-0",
            &RunFilter {
                after: Some(tasklane_core::page::RunKey::of(run)),
                limit: Some(2),
                ..Default::default()
            },
        )?;
        push(
            &format!("runs after {}", run.id),
            format!("{:?}", after.iter().map(|r| &r.id).collect::<Vec<_>>()),
        );
    }
    push("expired", format!("{:?}", r.expired_leases(Ts(400), 10)?));
    push("expired 1", format!("{:?}", r.expired_leases(Ts(400), 1)?));
    push("deadline", format!("{:?}", r.next_lease_deadline()?));
    push(
        "active",
        format!("{:?}", r.active_runs_of_session("s1", None)?),
    );
    push(
        "active run",
        format!("{:?}", r.active_run_of_session("s1", None)?),
    );
    push(
        "heads",
        format!("{:?}", r.claim_class_heads("w:x|", Priority::Low)?),
    );
    push("tokens", format!("{:?}", r.api_tokens()?));
    push("token", format!("{:?}", r.api_token("sha256:beta")?));
    push("revoked", format!("{:?}", r.api_token("sha256:alpha")?));
    push(
        "session",
        format!("{:?}", r.agent_session("s1", Some("beta"))?),
    );
    let ids: Vec<String> = ["c-1", "c-0", "P-1", "c-1"].map(String::from).to_vec();
    push("by ids", format!("{:?}", r.tasks_by_ids(&ids)?));
    let mut counts: Vec<_> = r.child_counts(&ids)?.into_iter().collect();
    counts.sort();
    push("child counts", format!("{counts:?}"));
    push("open runs", format!("{:?}", r.open_runs_of_tasks(&ids)?));
    push("deps", format!("{:?}", r.dependencies_of_tasks(&ids)?));
    push("dependents", format!("{:?}", r.dependents_of("c-2")?));
    push(
        "events",
        format!("{:?}", r.events_of_task("c-3", 0, Some(5), true)?),
    );
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_equal_the_sqlite_backend() {
    let (_db, store) = pg_store!();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = crate::sqlite::SqliteStore::open(
        &dir.path().join("tasklane.db"),
        crate::sqlite::StoreOptions::default(),
    )
    .unwrap();
    sqlite.write(differential_writes).await.unwrap();
    store.write(differential_writes).await.unwrap();
    let expected = sqlite.read(differential_reads).await.unwrap();
    let got = store.read(differential_reads).await.unwrap();
    if std::env::var("TASKLANE_TEST_DUMP").is_ok() {
        eprintln!("{}", got.join("\n"));
    }
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e, g);
    }
    assert_eq!(expected.len(), got.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn rolled_back_items_leave_no_gap_in_the_sequences() {
    let (_db, store) = pg_store!();
    insert(&store, vec![task("a", 1)]).await;
    let seqs = store
        .write(|w| {
            // The very first event of the log, rolled back: the log still starts at 1.
            w.begin_item()?;
            w.append_event(&event("x-1", "a", 2))?;
            w.append_event(&event("x-2", "a", 2))?;
            w.end_item(false)?;
            let first = w.append_event(&event("e-1", "a", 3))?;
            w.begin_item()?;
            w.append_event(&event("x-3", "a", 4))?;
            w.end_item(false)?;
            // An item that appended nothing leaves the sequence alone.
            w.begin_item()?;
            w.end_item(false)?;
            let second = w.append_event(&event("e-2", "a", 5))?;
            Ok((first, second))
        })
        .await
        .unwrap();
    assert_eq!(seqs, (1, 2));
    assert_eq!(*store.committed_sequence().borrow(), 2);
    let a = get_task(&store, "a").await.unwrap();
    assert_eq!((a.latest_event_seq, a.last_activity_at), (2, Ts(5)));
}
