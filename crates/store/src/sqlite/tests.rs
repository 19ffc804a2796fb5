//! Tests of the SQLite backend's own machinery: migrations and upgrades, the writer's queue and
//! batches, the WAL, query plans. The backend-neutral store tests are the conformance suite
//! (`crate::conformance`), run on SQLite and PostgreSQL alike.

use std::time::Duration;

use tasklane_core::model::{Priority, Run, RunStatus, Task};
use tasklane_core::page::TaskKey;
use tasklane_core::store::TaskFilter;
use tasklane_core::time::Ts;
use tasklane_core::Error;

use super::*;
use crate::conformance::fixtures::{class_run, event, full_task, paging_tasks, run, task};
use crate::conformance::recount::{assert_sqlite_counters_match_a_recount, sqlite_rows};
use crate::conformance::{
    assert_pages_use_index_ranges, get_task, heads, hold_writer, insert, insert_result,
    insert_runs, paging_filters, sqlite_store_with, wait_queued,
};

fn raw(path: &Path) -> Connection {
    Connection::open(path).unwrap()
}

/// A database as an older Tasklane left it: the first `version` migrations applied.
fn database_at_version(path: &Path, version: usize) -> Connection {
    let conn = raw(path);
    for step in &schema::MIGRATIONS[..version] {
        conn.execute_batch(step).unwrap();
    }
    conn.pragma_update(None, "user_version", version as i64)
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread")]
async fn opens_migrates_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/tasklane.db");
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    insert(&store, vec![full_task("task-1")]).await;
    store.shutdown();
    store.shutdown();
    assert!(matches!(
        store.write(|_| Ok(())).await,
        Err(Error::Unavailable(_))
    ));
    drop(store);

    let conn = raw(&path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(page_size(&conn), 2048);
    drop(conn);

    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    assert_eq!(get_task(&store, "task-1").await, Some(full_task("task-1")));
}

fn page_size(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_keeps_the_page_size_it_was_created_with() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasklane.db");
    let conn = database_at_version(&path, 1);
    assert_eq!(page_size(&conn), 4096);
    drop(conn);
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    insert(&store, vec![full_task("task-1")]).await;
    assert_eq!(get_task(&store, "task-1").await, Some(full_task("task-1")));
    store.shutdown();
    drop(store);
    assert_eq!(page_size(&raw(&path)), 4096);
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrading_to_sessions_per_token_keeps_live_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasklane.db");
    let conn = database_at_version(&path, 3);
    conn.execute_batch(
        "INSERT INTO agent_sessions (session_id, agent_name, first_seen_at, last_seen_at, token_name)
             VALUES ('s1', 'claude', 10, 20, 'pool-a'), ('s2', NULL, 10, 20, NULL);
         INSERT INTO tasks (id, scope, title, priority, max_attempts, auto_enqueue_on_ready, status,
             approval_policy, approval_state, created_by_kind, created_by_ref, origin_kind,
             origin_ref, created_at, updated_at, last_activity_at)
             VALUES ('t', 'global', 't', 'medium', 3, 0, 'ready', 'none', 'not_required',
                     'human', 'ops', 'http', 'tasks.create', 1, 1, 1),
                    ('t2', 'global', 't2', 'medium', 3, 0, 'ready', 'none', 'not_required',
                     'human', 'ops', 'http', 'tasks.create', 1, 1, 1);
         INSERT INTO task_runs (id, task_id, status, attempt, session_id, origin_kind, origin_ref,
             claim_token_hash, lease_until, queued_at)
             VALUES ('r1', 't', 'claimed', 1, 's1', 'http', 'tasks.start', 'sha256:x', 99, 1),
                    ('r2', 't2', 'claimed', 1, 's2', 'http', 'tasks.start', 'sha256:y', 99, 1);",
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let (r1, r2, s1, s2) = store
        .read(|r| {
            Ok((
                r.run("r1")?.unwrap(),
                r.run("r2")?.unwrap(),
                r.agent_session("s1", Some("pool-a"))?,
                r.agent_session("s2", None)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(r1.session_token.as_deref(), Some("pool-a"));
    assert_eq!(r2.session_token, None);
    assert_eq!(s1.unwrap().agent_name.as_deref(), Some("claude"));
    assert_eq!(s2.unwrap().first_seen_at, Ts(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasklane.db");
    SqliteStore::open(&path, StoreOptions::default())
        .unwrap()
        .shutdown();
    raw(&path)
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    match SqliteStore::open(&path, StoreOptions::default()) {
        Err(Error::Storage(msg)) => assert_eq!(
            msg,
            format!(
                "database schema version {} is newer than this tasklane (knows {}); upgrade tasklane",
                SCHEMA_VERSION + 1,
                SCHEMA_VERSION
            )
        ),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("opened a newer database"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_commit_fails_the_whole_batch() {
    let (_dir, store) = sqlite_store_with(StoreOptions::default());
    let (release, blocker) = hold_writer(&store).await;

    let s = store.clone();
    let good = tokio::spawn(async move { insert_result(&s, task("good", 1)).await });
    wait_queued(&store, 1).await;
    let s = store.clone();
    // A deferred foreign key violation passes its savepoint and only fails at COMMIT.
    let bad = tokio::spawn(async move {
        s.submit(0, |db: &mut Db<'_>| {
            db.conn
                .execute_batch(
                    "PRAGMA defer_foreign_keys = ON;
                     INSERT INTO task_dependencies VALUES ('ghost', 'ghost2', 'blocks', 1);",
                )
                .map_err(sql_err)
        })
        .await
    });
    wait_queued(&store, 2).await;
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();

    assert!(matches!(good.await.unwrap(), Err(Error::Unavailable(_))));
    assert!(matches!(bad.await.unwrap(), Err(Error::Unavailable(_))));
    assert_eq!(get_task(&store, "good").await, None);
    insert(&store, vec![task("after", 1)]).await;
    assert!(get_task(&store, "after").await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn full_queue_is_refused() {
    let (_dir, store) = sqlite_store_with(StoreOptions {
        max_queued_writes: 2,
        ..StoreOptions::default()
    });
    let (release, blocker) = hold_writer(&store).await;
    let mut queued = Vec::new();
    for id in ["q1", "q2"] {
        let s = store.clone();
        queued.push(tokio::spawn(
            async move { insert_result(&s, task(id, 1)).await },
        ));
    }
    wait_queued(&store, 2).await;
    match insert_result(&store, task("q3", 1)).await {
        Err(Error::Unavailable(msg)) => assert_eq!(msg, "write queue full"),
        other => panic!("expected a full queue, got {other:?}"),
    }
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    for q in queued {
        q.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_bytes_are_bounded() {
    let (_dir, store) = sqlite_store_with(StoreOptions {
        max_queued_bytes: 1_000,
        ..StoreOptions::default()
    });
    let (release, blocker) = hold_writer(&store).await;
    let sized = |id: &'static str, bytes: usize| {
        let s = store.clone();
        async move {
            s.write_sized(bytes, move |w| w.insert_task(&task(id, 1)))
                .await
        }
    };
    // Even a body above the bound is taken into an empty queue.
    let big = tokio::spawn(sized("big", 1_500));
    wait_queued(&store, 1).await;
    match sized("refused", 10).await {
        Err(Error::Unavailable(msg)) => assert_eq!(msg, "write queue full"),
        other => panic!("expected a full queue, got {other:?}"),
    }
    // Commands that hold no body are bounded by count only.
    let bodyless = tokio::spawn(sized("bodyless", 0));
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    big.await.unwrap().unwrap();
    bodyless.await.unwrap().unwrap();
    // Taken by the writer, their bytes no longer count.
    sized("after", 900).await.unwrap();
    assert!(get_task(&store, "refused").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drains_the_queue() {
    let (_dir, store) = sqlite_store_with(StoreOptions::default());
    let (release, blocker) = hold_writer(&store).await;
    let s = store.clone();
    let late = tokio::spawn(async move { insert_result(&s, task("late", 1)).await });
    wait_queued(&store, 1).await;
    let stopping = tokio::task::spawn_blocking({
        let s = store.clone();
        move || s.shutdown()
    });
    // Once the queue is closed to new writes, the queued one must still be run.
    while !store.inner.queue.is_shut_down() {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    match insert_result(&store, task("refused", 1)).await {
        Err(Error::Unavailable(m)) => assert_eq!(m, "the store is shut down"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    stopping.await.unwrap();
    late.await.unwrap().unwrap();
    // Reads still work from the pool after the writer stopped.
    assert!(get_task(&store, "late").await.is_some());
    assert!(get_task(&store, "refused").await.is_none());
}

/// The query plan of `list_tasks` for this filter, one line per step.
fn task_list_plan(db: &mut Db<'_>, filter: &TaskFilter) -> String {
    super::read::with_task_list_query(filter, |sql, params| {
        let mut stmt = db
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .map_err(super::error::sql_err)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(super::error::sql_err)?;
        let mut plan = Vec::new();
        while let Some(row) = rows.next().map_err(super::error::sql_err)? {
            plan.push(row.get::<_, String>(3).map_err(super::error::sql_err)?);
        }
        Ok(plan.join("\n"))
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn task_pages_resume_through_an_index_range() {
    let (_dir, store) = sqlite_store_with(StoreOptions::default());
    insert(&store, paging_tasks()).await;
    let all: Vec<Task> = store
        .read(|r| r.list_tasks(&TaskFilter::default()))
        .await
        .unwrap();
    let key = TaskKey::of(&all[2]);
    let plans = store
        .read_db(move |db| Ok(paging_filters(&key).map(|f| task_list_plan(db, &f))))
        .await
        .unwrap();
    assert_pages_use_index_ranges(
        &plans,
        [
            "INDEX tasks_list_order (",
            "INDEX tasks_parent (parent_task_id=? AND",
        ],
        "(last_activity_at,updated_at,created_at,id)<(?,?,?,?)",
        "TEMP B-TREE",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_stays_bounded_under_back_to_back_writes_and_readers() {
    let limit = 128 << 10;
    let (dir, store) = sqlite_store_with(StoreOptions {
        wal_limit_bytes: limit,
        ..StoreOptions::default()
    });
    let wal = wal_path(&dir.path().join("tasklane.db"));
    let reader = raw(&dir.path().join("tasklane.db"));
    let mut largest = 0;
    for i in 0..400 {
        // A reader holds a snapshot across every commit, as a busy read pool does.
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))
            .unwrap();
        let t = Task {
            description: Some("d".repeat(6_000)),
            ..task(&format!("t{i}"), i)
        };
        insert(&store, vec![t]).await;
        reader.execute_batch("COMMIT").unwrap();
        // Answered after any checkpoint the previous batch triggered.
        store.write(|_| Ok(())).await.unwrap();
        largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // One batch (here a single insert, ~45 KiB) may overshoot the limit before the checkpoint, and
    // a checkpoint that found the reader still open retries after the next batch. Without the
    // writer's checkpoints this WAL grows to ~19 MiB.
    assert!(
        largest <= limit + (512 << 10),
        "the WAL reached {largest} bytes with a limit of {limit}"
    );
}

/// The opcodes of `sql`'s program, or its query plan with `plan`.
fn explain(conn: &Connection, sql: &str, plan: bool) -> String {
    let prefix = if plan {
        "EXPLAIN QUERY PLAN"
    } else {
        "EXPLAIN"
    };
    let column = if plan { 3 } else { 1 };
    let mut stmt = conn.prepare(&format!("{prefix} {sql}")).unwrap();
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(column))
        .unwrap()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>();
    rows.join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn status_changes_build_no_temporary_btree_and_status_sets_use_their_indexes() {
    use super::status_sets::{active_run, not_open_work, open_run};
    let (dir, _store) = sqlite_store_with(StoreOptions::default());
    let conn = raw(&dir.path().join("tasklane.db"));
    // Every claim, heartbeat and completion writes these; each write of a row evaluates the
    // predicates of its table's partial indexes for the old and the new row.
    for sql in [
        "UPDATE task_runs SET status = 'claimed', lease_until = 1, claimed_by_kind = 'k', \
         claimed_by_ref = 'r', session_id = 's' WHERE id = 'run'",
        "UPDATE tasks SET status = 'ready', updated_at = 1, last_activity_at = 1, \
         owner_kind = 'k', latest_run_failed = 1 WHERE id = 'task'",
    ] {
        let program = explain(&conn, sql, false);
        assert!(
            !program.contains("OpenEphemeral"),
            "{sql} builds a temporary b-tree:\n{program}"
        );
    }
    // The queue per priority (metrics) is read from the age index alone.
    let plan = explain(
        &conn,
        "SELECT priority_rank, COUNT(*), MIN(queued_at) FROM task_runs INDEXED BY task_runs_queue_recent \
         WHERE status = 'queued' GROUP BY priority_rank",
        true,
    );
    assert!(
        plan.contains("COVERING INDEX task_runs_queue_recent"),
        "{plan}"
    );
    // The queries state each set exactly as the partial index does, so they still use it.
    for (sql, index) in [
        (
            concat!(
                "SELECT id FROM task_runs WHERE session_id = 's' AND session_token IS NULL AND ",
                active_run!("status")
            ),
            "task_runs_session_active",
        ),
        (
            concat!(
                "SELECT MIN(lease_until) FROM task_runs WHERE ",
                active_run!("status"),
                " AND lease_until IS NOT NULL"
            ),
            "task_runs_active_lease",
        ),
        (
            concat!("SELECT id FROM task_runs WHERE ", active_run!("status")),
            "task_runs_active_lease",
        ),
        (
            concat!(
                "SELECT task_id FROM task_runs WHERE claimed_by_kind = 'k' AND claimed_by_ref = 'r' AND ",
                open_run!("status")
            ),
            "task_runs_open_claimer",
        ),
        (
            concat!(
                "SELECT id FROM tasks t INDEXED BY tasks_inbox_open WHERE t.owner_kind = 'k' \
                 AND t.owner_ref = 'r' AND NOT ",
                not_open_work!("t.status"),
                " AND t.latest_run_failed = 0"
            ),
            "tasks_inbox_open",
        ),
    ] {
        let plan = explain(&conn, sql, true);
        assert!(plan.contains(index), "{sql} does not use {index}:\n{plan}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_class_heads_seek_the_claim_index() {
    let (dir, _store) = sqlite_store_with(StoreOptions::default());
    // One seek of the claim index per class: no scan, no sort.
    let conn = raw(&dir.path().join("tasklane.db"));
    let params: [&dyn rusqlite::ToSql; 3] = [&"g|", &1, &""];
    for (sql, seek) in [
        (
            super::read::NEXT_CLASS_OF_PRIORITY_SQL,
            "(claim_audience=? AND priority_rank=? AND claim_caps>?)",
        ),
        (
            super::read::FIRST_CLASS_ABOVE_PRIORITY_SQL,
            "(claim_audience=? AND priority_rank>?)",
        ),
    ] {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan = stmt
            .query_map(&params[..stmt.parameter_count()], |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let expected = format!("SEARCH task_runs USING INDEX task_runs_claim_class {seek}");
        assert!(plan.contains(&expected), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn upgrading_to_claim_classes_fills_them_for_open_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasklane.db");
    let conn = database_at_version(&path, 6);
    conn.execute_batch(
        "INSERT INTO tasks (id, scope, workspace_id, title, priority, max_attempts,
             auto_enqueue_on_ready, status, approval_policy, approval_state, owner_kind, owner_ref,
             created_by_kind, created_by_ref, origin_kind, origin_ref, created_at, updated_at,
             last_activity_at)
             VALUES ('g', 'global', NULL, 't', 'medium', 3, 0, 'ready', 'none', 'not_required',
                     NULL, NULL, 'human', 'ops', 'http', 'tasks.create', 1, 1, 1),
                    ('w', 'workspace', 'ws/1', 't', 'medium', 3, 0, 'ready', 'none',
                     'not_required', 'pool', 'gpu', 'human', 'ops', 'http', 'tasks.create', 1, 1, 1),
                    ('b', 'global', NULL, 't', 'medium', 3, 0, 'blocked', 'none', 'not_required',
                     NULL, NULL, 'human', 'ops', 'http', 'tasks.create', 1, 1, 1),
                    ('h', 'global', NULL, 't', 'medium', 3, 0, 'ready', 'none', 'not_required',
                     'human', 'ann', 'human', 'ops', 'http', 'tasks.create', 1, 1, 1);
         INSERT INTO task_runs (id, task_id, status, attempt, origin_kind, origin_ref, queued_at,
             priority_rank, required_capabilities, preferred_capabilities)
             VALUES ('rg', 'g', 'queued', 1, 'http', 'tasks.start', 1, 1, '[\"z\",\"a\"]', '[\"p\"]'),
                    ('rw', 'w', 'queued', 1, 'http', 'tasks.start', 1, 1, '[]', '[]'),
                    ('rb', 'b', 'queued', 1, 'http', 'tasks.start', 1, 1, '[]', '[]'),
                    ('rh', 'h', 'queued', 1, 'http', 'tasks.start', 1, 1, '[]', '[]');",
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let audiences = store
        .read(|r| {
            ["rg", "rw", "rb", "rh"]
                .iter()
                .map(|id| Ok(r.run(id)?.unwrap().claim_audience))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .unwrap();
    let tasks = store
        .read(|r| {
            ["g", "w", "b", "h"]
                .iter()
                .map(|id| Ok(r.task(id)?.unwrap()))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .unwrap();
    let expected: Vec<_> = tasks
        .iter()
        .map(tasklane_core::claim_audience::of_task)
        .collect();
    assert_eq!(audiences, expected);
    assert_eq!(expected[0].as_deref(), Some("g|"));
    assert_eq!(expected[1].as_deref(), Some("w:ws/1|pool:gpu"));

    // A run the writer stores with the same capability sets joins the migrated run's class.
    let newer = Run {
        required_capabilities: vec!["a".into(), "z".into()],
        preferred_capabilities: vec!["p".into()],
        claim_audience: Some("g|".into()),
        ..run("rg2", "g2", RunStatus::Queued, 5)
    };
    store
        .write(move |w| {
            w.insert_task(&task("g2", 5))?;
            w.insert_run(&newer)
        })
        .await
        .unwrap();
    assert_eq!(heads(&store, &["g|"], Priority::Low).await, ["rg"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_claim_classes_does_not_walk_a_long_class() {
    use rusqlite::StatementStatus;
    let (_dir, store) = sqlite_store_with(StoreOptions::default());
    let rows: Vec<_> = (0..3000)
        .map(|i| class_run(&format!("r{i:05}"), Some("g|"), Priority::Medium, &[], i))
        .chain([class_run("gpu", Some("g|"), Priority::Medium, &["gpu"], 1)])
        .collect();
    insert_runs(&store, rows).await;
    let (heads, steps) = store
        .read_db(|db| {
            let heads = db.claim_class_heads(&["g|".to_string()], Priority::Low)?;
            let mut steps = 0;
            for sql in [
                super::read::NEXT_CLASS_OF_PRIORITY_SQL,
                super::read::FIRST_CLASS_ABOVE_PRIORITY_SQL,
            ] {
                let stmt = db.conn.prepare_cached(sql).map_err(super::error::sql_err)?;
                steps += stmt.get_status(StatementStatus::VmStep);
            }
            Ok((heads.len(), steps))
        })
        .await
        .unwrap();
    assert_eq!(heads, 2);
    // A handful of seeks, each a few dozen VM steps; walking the class would take thousands.
    assert!(steps < 500, "{steps} VM steps to list 2 classes");
}

#[tokio::test(flavor = "multi_thread")]
async fn counters_kept_by_triggers_stay_exact_after_the_upgrade_to_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasklane.db");
    // A database at version 6, whose counters its triggers kept: a task whose latest run failed,
    // one depending on it, one owned.
    let conn = database_at_version(&path, 6);
    conn.execute_batch(
        "INSERT INTO tasks (id, scope, title, priority, max_attempts, auto_enqueue_on_ready, status,
             approval_policy, approval_state, created_by_kind, created_by_ref, origin_kind,
             origin_ref, created_at, updated_at, last_activity_at, owner_kind, owner_ref)
             VALUES ('a', 'global', 'a', 'medium', 3, 0, 'failed', 'none', 'not_required',
                     'human', 'ops', 'http', 'tasks.create', 1, 1, 1, NULL, NULL),
                    ('b', 'global', 'b', 'high', 3, 0, 'blocked', 'none', 'not_required',
                     'human', 'ops', 'http', 'tasks.create', 1, 1, 1, 'pool', 'gpu');
         INSERT INTO task_dependencies (task_id, depends_on_task_id, kind, created_at)
             VALUES ('b', 'a', 'blocks', 2);
         INSERT INTO task_runs (id, task_id, status, attempt, origin_kind, origin_ref, queued_at,
             claimed_at, started_at, ended_at, priority_rank)
             VALUES ('a1', 'a', 'failed', 1, 'http', 'tasks.start', 10, 15, 18, 20, 1),
                    ('b1', 'b', 'queued', 1, 'http', 'tasks.start', 30, NULL, NULL, NULL, 2);",
    )
    .unwrap();
    drop(conn);

    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let check = raw(&path);
    assert_sqlite_counters_match_a_recount(&check);
    // Writes after the upgrade keep them exact: a retry clears "latest run failed", the edge goes.
    store
        .write(|w| {
            let mut a2 = run("a2", "a", RunStatus::Queued, 40);
            a2.attempt = 2;
            w.insert_run(&a2)?;
            w.delete_dependency("b", "a").map(drop)
        })
        .await
        .unwrap();
    assert_sqlite_counters_match_a_recount(&check);
    assert_eq!(
        sqlite_rows(
            &check,
            "SELECT id, latest_run_failed, dependency_count FROM tasks"
        ),
        vec!["a|0|0", "b|0|0"]
    );
}

#[test]
fn file_len_reads_the_size_and_says_zero_for_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    assert_eq!(file_len(&path), 0);
    std::fs::write(&path, vec![7u8; 12_345]).unwrap();
    assert_eq!(file_len(&path), 12_345);
}

/// Event ids and sequences of the log, in sequence order.
fn event_ids(path: &Path) -> Vec<(String, i64)> {
    raw(path)
        .prepare("SELECT id, sequence FROM task_events ORDER BY sequence")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

async fn append(store: &SqliteStore, task_id: &str, ids: &[&str]) {
    let (task_id, ids): (String, Vec<String>) =
        (task_id.into(), ids.iter().map(|s| s.to_string()).collect());
    store
        .write(move |w| {
            ids.iter()
                .try_for_each(|id| w.append_event(&event(id, &task_id, 20)).map(drop))
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_log_names_its_events_by_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    insert(&store, vec![task("t", 10)]).await;
    append(&store, "t", &["evt-a", "evt-b"]).await;
    // A command that fails after appending leaves no sequence behind.
    let failed = store
        .write(|w| {
            w.append_event(&event("evt-c", "t", 20))?;
            Err::<(), _>(Error::conflict("nope", "fails after appending"))
        })
        .await;
    assert!(failed.is_err());
    append(&store, "t", &["evt-d"]).await;
    drop(store);

    let ids = event_ids(&path);
    assert_eq!(ids.iter().map(|(_, s)| *s).collect::<Vec<_>>(), [1, 2, 3]);
    for (id, sequence) in &ids {
        assert_eq!(id, &tasklane_core::ids::event_id_of(*sequence));
    }
    assert_eq!(ids[0].0, "evt-0000000000000001");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_upgraded_with_events_keeps_random_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let old = database_at_version(&path, 10);
    // An event of a task since deleted.
    old.execute_batch(
        "PRAGMA foreign_keys = OFF;
         INSERT INTO task_events (id, task_id, event_type, actor_kind, actor_ref, origin_kind, \
         origin_ref, payload, timestamp) VALUES ('evt-0000000000000002', 'gone', \
         'task.created', 'system', 's', 'system', 's', '{}', 1);",
    )
    .unwrap();
    drop(old);
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    insert(&store, vec![task("t", 10)]).await;
    append(&store, "t", &["evt-given-1", "evt-given-2"]).await;
    drop(store);
    // The stored id 2 is what sequence 2 would be named: the upgraded log keeps the ids given.
    assert_eq!(
        event_ids(&path),
        [
            ("evt-0000000000000002".to_string(), 1),
            ("evt-given-1".to_string(), 2),
            ("evt-given-2".to_string(), 3),
        ]
    );
}
