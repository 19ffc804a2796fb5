//! Tests of the PostgreSQL backend's own machinery: query plans, and its answers compared with
//! the SQLite backend's. The backend-neutral store tests are the conformance suite
//! (`crate::conformance`), run on SQLite and PostgreSQL alike. Each test creates its own scratch
//! database through `TASKLANE_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1/test`) and
//! is skipped when that is not set.

use serde_json::json;
use tasklane_core::model::{OwnerKind, Priority, Ref, RunStatus, Task, TaskStatus};
use tasklane_core::page::TaskKey;
use tasklane_core::store::{RunFilter, TaskFilter, WriteStore};
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use crate::conformance::fixtures::{blocks, event, full_task, paging_tasks, run, task};
use crate::conformance::{
    assert_pages_use_index_ranges, insert, paging_filters, postgres_store, DATABASE_URL_VAR,
};
use crate::Store;

macro_rules! pg_store {
    () => {
        match postgres_store().await {
            Some(pair) => pair,
            None => {
                eprintln!("{DATABASE_URL_VAR} is not set: skipped");
                return;
            }
        }
    };
}

#[tokio::test(flavor = "multi_thread")]
async fn task_pages_resume_through_an_index_range() {
    let (_db, store) = pg_store!();
    insert(&store, paging_tasks()).await;
    let all: Vec<Task> = store
        .read(|r| r.list_tasks(&TaskFilter::default()))
        .await
        .unwrap();
    let key = TaskKey::of(&all[2]);
    let plans = store
        .read_db(move |db| {
            // A table this small is cheaper to scan; the question is whether the index serves.
            db.conn.batch("SET LOCAL enable_seqscan = off")?;
            paging_filters(&key)
                .iter()
                .map(|filter| plan_of_list(db, filter))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .unwrap();
    assert_pages_use_index_ranges(
        &plans,
        [
            "Index Scan Backward using tasks_list_order",
            "Index Scan Backward using tasks_parent",
        ],
        "(ROW(last_activity_at, updated_at, created_at, id) < ROW(",
        "Sort",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_class_heads_seek_the_claim_queue() {
    let (_db, store) = pg_store!();
    // One seek of the claim queue per class, every audience in one statement, then each head's
    // run by its key: no scan, no sort.
    let plan = store
        .read_db(|db| {
            db.conn.batch("SET LOCAL enable_seqscan = off")?;
            explain(
                db,
                super::super::read::CLAIM_CLASS_HEADS_SQL,
                &[&"g|", &"s|a", &None::<String>, &0_i64],
            )
        })
        .await
        .unwrap();
    assert!(plan.contains("Recursive Union"), "{plan}");
    assert_eq!(plan.matches("using run_queue_class").count(), 2, "{plan}");
    assert!(plan.contains("Index Scan using task_runs_pkey"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    assert!(!plan.contains("Filter"), "{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn claim_class_heads_keep_one_generic_plan() {
    let (_db, store) = pg_store!();
    // PostgreSQL plans a prepared statement for its first five executions, then keeps a generic
    // plan unless that one looks dearer: a statement that never settles is planned at every
    // claim (an array's `unnest`, costed at a hundred rows, did that).
    let audiences = ["g|".to_string(), "g|agent_session:a".to_string()];
    let (generic, custom): (i64, i64) = store
        .read_db(move |db| {
            use tasklane_core::store::ReadStore;
            for _ in 0..8 {
                db.claim_class_heads(&audiences, Priority::Low)?;
            }
            let row = db.conn.query_one(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
                 WHERE statement = $1",
                &[&super::super::read::CLAIM_CLASS_HEADS_SQL],
            )?;
            Ok((row.get(0), row.get(1)))
        })
        .await
        .unwrap();
    assert_eq!((generic, custom), (3, 5));
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
        (RunStatus::Canceled, None),
        (RunStatus::Failed, Some(20)),
    ]
    .into_iter()
    .enumerate()
    {
        // A task has at most one open run: c-0 has one, and the others have a task each.
        let task = if i == 0 || !status.is_open() {
            "c-0".to_string()
        } else {
            format!("c-{i}")
        };
        let mut r = run(&format!("r-{i}"), &task, status, 200 + (i as i64 % 3));
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
        format!(
            "{:?}",
            r.claim_class_heads(&["w:x|".to_string()], Priority::Low)?
        ),
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
    Store::from(store.clone())
        .write(differential_writes)
        .await
        .unwrap();
    let expected = sqlite.read(differential_reads).await.unwrap();
    let got = Store::from(store.clone())
        .read(differential_reads)
        .await
        .unwrap();
    if std::env::var("TASKLANE_TEST_DUMP").is_ok() {
        eprintln!("{}", got.join("\n"));
    }
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e, g);
    }
    assert_eq!(expected.len(), got.len());
}

/// What a connection listening on the commit channel hears of the commits before a marker it
/// notifies itself: notifications arrive in commit order, so this waits for nothing else.
fn heard_before_marker(conn: &mut super::super::Conn) -> Vec<String> {
    conn.batch(&format!("NOTIFY {}, 'marker'", super::super::CHANNEL))
        .unwrap();
    let mut heard = Vec::new();
    loop {
        let n = conn
            .next_notification(std::time::Duration::from_secs(30))
            .unwrap()
            .expect("the marker arrives");
        if n.payload() == "marker" {
            return heard;
        }
        heard.push(n.payload().to_string());
    }
}

/// A server alone notifies nobody of its commits (a notification costs PostgreSQL a signal and a
/// wake-up of every listener). Once another server has registered, every commit that appended
/// events notifies, naming its last sequence.
#[tokio::test(flavor = "multi_thread")]
async fn commits_notify_only_once_another_server_has_registered() {
    let (db, store) = pg_store!();
    let store = Store::from(store);
    let opts = super::super::PgOptions::new(db.url.clone());
    // Listens like another server's listener, but has not registered.
    let mut conn = tokio::task::spawn_blocking(move || {
        let mut conn = super::super::Conn::connect(&opts).unwrap();
        conn.batch(&format!("LISTEN {}", super::super::CHANNEL))
            .unwrap();
        conn
    })
    .await
    .unwrap();
    let append = |n: i64| {
        let store = store.clone();
        async move {
            store
                .write(move |w| {
                    w.insert_task(&task(&format!("t{n}"), n))?;
                    w.append_event(&event(&format!("e{n}"), &format!("t{n}"), n))
                })
                .await
                .unwrap()
        }
    };
    append(1).await;
    let (heard, mut conn) =
        tokio::task::spawn_blocking(move || (heard_before_marker(&mut conn), conn))
            .await
            .unwrap();
    assert!(heard.is_empty(), "{heard:?}");

    conn = tokio::task::spawn_blocking(move || {
        super::super::nodes::register(&mut conn, 42, Ts(0)).unwrap();
        conn
    })
    .await
    .unwrap();
    let seq = append(2).await;
    let heard = tokio::task::spawn_blocking(move || heard_before_marker(&mut conn))
        .await
        .unwrap();
    assert_eq!(heard.len(), 1, "{heard:?}");
    assert!(heard[0].ends_with(&format!(":{seq}")), "{heard:?}");
}

/// A server whose row is gone (forgotten after an hour away, its connection still open)
/// registers again the next time it marks itself seen, so the others notify it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_forgotten_by_the_others_registers_again() {
    let (db, _store) = pg_store!();
    let opts = super::super::PgOptions::new(db.url.clone());
    let rows = tokio::task::spawn_blocking(move || {
        use super::super::nodes;
        let mut conn = super::super::Conn::connect(&opts).unwrap();
        let node_rows = |conn: &mut super::super::Conn| -> Vec<i64> {
            conn.query(
                "SELECT started_at FROM tasklane_nodes WHERE node_id = 77",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
        };
        nodes::register(&mut conn, 77, Ts(5)).unwrap();
        let registered = node_rows(&mut conn);
        conn.batch("DELETE FROM tasklane_nodes WHERE node_id = 77")
            .unwrap();
        nodes::seen(&mut conn, 77, Ts(5), std::time::Duration::ZERO).unwrap();
        (registered, node_rows(&mut conn))
    })
    .await
    .unwrap();
    assert_eq!(rows, (vec![5], vec![5]));
}

/// Deferred writes go as one pipeline under one `Sync`, and so do `query_all`'s reads
/// (`vendor/tokio-postgres`): each read answers its own statement in order, empty answers
/// included, after the writes sent before it; the first refused write is the error reported (not
/// the "transaction aborted" of the statements after it).
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_writes_and_reads_keep_their_order_and_report_the_first_refusal() {
    let (db, _store) = pg_store!();
    let opts = super::super::PgOptions::new(db.url.clone());
    tokio::task::spawn_blocking(move || {
        let mut conn = super::super::Conn::connect(&opts).unwrap();
        let insert = "INSERT INTO pipeline_check (k, v) VALUES ($1, $2)";
        let texts = |rows: &[tokio_postgres::Row]| -> Vec<String> {
            rows.iter().map(|r| r.get::<_, String>(0)).collect()
        };
        conn.batch("CREATE TABLE pipeline_check (k INT PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        conn.batch("BEGIN").unwrap();
        conn.execute_later(insert, &[&1_i32, &"a"]).unwrap();
        conn.execute_later(insert, &[&2_i32, &"b"]).unwrap();
        let answers = conn
            .query_all(&[
                ("SELECT v FROM pipeline_check WHERE k = $1", &[&1_i32]),
                ("SELECT v FROM pipeline_check WHERE k = $1", &[&3_i32]),
                ("SELECT v FROM pipeline_check ORDER BY k", &[]),
            ])
            .unwrap();
        assert_eq!(answers.len(), 3);
        assert_eq!(texts(&answers[0]), ["a"]);
        assert!(answers[1].is_empty());
        assert_eq!(texts(&answers[2]), ["a", "b"]);

        let before = conn.effects();
        conn.execute_later(insert, &[&3_i32, &"c"]).unwrap();
        conn.execute_later(insert, &[&1_i32, &"again"]).unwrap();
        conn.execute_later(insert, &[&4_i32, &"d"]).unwrap();
        let err = conn
            .query("SELECT v FROM pipeline_check ORDER BY k", &[])
            .unwrap_err();
        assert!(err.to_string().contains("23505"), "{err}");
        assert!(conn.refused_since(before));
        conn.batch("ROLLBACK").unwrap();

        // A statement first used while a refused write is still unsent is prepared ahead of it,
        // so the refusal is reported where the writes are answered, not by whatever needed the
        // statement (a statement parsed in an aborted transaction fails too).
        conn.batch("BEGIN").unwrap();
        conn.execute_later(insert, &[&5_i32, &"e"]).unwrap();
        conn.execute_later(insert, &[&5_i32, &"again"]).unwrap();
        conn.execute_later(
            "UPDATE pipeline_check SET v = v || '?' WHERE k = $1",
            &[&5_i32],
        )
        .unwrap();
        let err = conn.flush().unwrap_err();
        assert!(err.to_string().contains("23505"), "{err}");
        conn.batch("ROLLBACK").unwrap();

        // The refused pipelines' transactions left nothing behind.
        let rows = conn
            .query("SELECT v FROM pipeline_check ORDER BY k", &[])
            .unwrap();
        assert!(rows.is_empty());

        // A COMMIT in the writes' pipeline keeps every write, in order; behind a refused write
        // it commits nothing.
        conn.batch("BEGIN").unwrap();
        for (k, v) in [(1_i32, "x"), (2, "y")] {
            conn.execute_later(insert, &[&k, &v]).unwrap();
        }
        conn.execute_later(
            "UPDATE pipeline_check SET v = v || '!' WHERE k = $1",
            &[&2_i32],
        )
        .unwrap();
        conn.commit_pipelined().unwrap();
        conn.batch("BEGIN").unwrap();
        conn.execute_later(insert, &[&7_i32, &"z"]).unwrap();
        conn.execute_later(insert, &[&1_i32, &"again"]).unwrap();
        let err = conn.commit_pipelined().unwrap_err();
        assert!(err.to_string().contains("23505"), "{err}");
        conn.batch("ROLLBACK").unwrap();
        let rows = conn
            .query("SELECT v FROM pipeline_check ORDER BY k", &[])
            .unwrap();
        assert_eq!(texts(&rows), ["x", "y!"]);
    })
    .await
    .unwrap();
}
