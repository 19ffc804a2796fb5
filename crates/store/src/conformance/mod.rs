//! One conformance suite for every storage backend, as a database driver's test suite is run
//! against every driver: each test is written once against [`Store`] (`async fn name(store:
//! Store)`) and [`for_every_backend!`] instantiates it per backend, as `sqlite_<name>` (always)
//! and `postgres_<name>`. The PostgreSQL tests each create a scratch database of their own
//! through `TASKLANE_TEST_DATABASE_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`) and
//! drop it at the end; without that variable they return at once, saying they were skipped.
//!
//! Tests of one backend's own machinery (SQLite migrations, WAL, lock file, query plans;
//! PostgreSQL plans, TLS, the comparisons with SQLite) stay in that backend's test files and
//! share the fixtures and helpers here.

pub(crate) mod fixtures;
pub(crate) mod recount;
mod suite;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tasklane_core::model::{Priority, Run, Task};
use tasklane_core::page::TaskKey;
use tasklane_core::store::TaskFilter;
use tasklane_core::Result;

use crate::postgres::{PgOptions, PgStore};
use crate::sqlite::{SqliteStore, StoreOptions};
use crate::Store;

/// The variable naming the PostgreSQL server the `postgres_*` tests create databases on.
pub(crate) const DATABASE_URL_VAR: &str = "TASKLANE_TEST_DATABASE_URL";

/// Instantiates each `test => sqlite_test, postgres_test;` for both backends, as one
/// `#[tokio::test(flavor = "multi_thread")]` each.
macro_rules! for_every_backend {
    ($($test:ident => $sqlite:ident, $postgres:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $sqlite() {
            let (_dir, store) = $crate::conformance::sqlite_store();
            $test(store).await;
        }

        #[tokio::test(flavor = "multi_thread")]
        async fn $postgres() {
            let Some((_db, store)) = $crate::conformance::postgres_store().await else {
                eprintln!(
                    "{} is not set: {} skipped",
                    $crate::conformance::DATABASE_URL_VAR,
                    stringify!($postgres)
                );
                return;
            };
            $test(store.into()).await;
        }
    )*};
}
pub(crate) use for_every_backend;

/// The two pages the index-range tests plan, both after `key` and three long: of every task, and
/// of parent `p`'s.
pub(crate) fn paging_filters(key: &TaskKey) -> [TaskFilter; 2] {
    let after = |f: TaskFilter| TaskFilter {
        after: Some(key.clone()),
        limit: Some(3),
        ..f
    };
    [
        after(TaskFilter::default()),
        after(TaskFilter {
            parent_task_id: Some("p".into()),
            ..Default::default()
        }),
    ]
}

/// The plans of the [`paging_filters`] pages each read its index (`indexes`) from the key on
/// (`range`), with no `sort` step over the whole list: the words are the backend's.
pub(crate) fn assert_pages_use_index_ranges(
    plans: &[String],
    indexes: [&str; 2],
    range: &str,
    sort: &str,
) {
    for (plan, index) in plans.iter().zip(indexes) {
        assert!(plan.contains(index) && plan.contains(range), "{plan}");
    }
    for plan in plans {
        assert!(!plan.contains(sort), "no sort of the whole list: {plan}");
    }
}

/// A SQLite store on a file of a temporary directory (the store must not outlive it).
pub(crate) fn sqlite_store() -> (tempfile::TempDir, Store) {
    let (dir, store) = sqlite_store_with(StoreOptions::default());
    (dir, store.into())
}

pub(crate) fn sqlite_store_with(opts: StoreOptions) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("tasklane.db"), opts).unwrap();
    (dir, store)
}

/// `url` with its database replaced by `name` (URL or key=value form).
pub(crate) fn with_database(url: &str, name: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return format!("{url} dbname={name}");
    };
    let (head, query) = url.split_at(url.find('?').unwrap_or(url.len()));
    let host_end = head[scheme_end..]
        .find('/')
        .map_or(head.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &head[..host_end])
}

/// Runs `f` on a thread of its own: the synchronous client must not block a runtime thread.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join().unwrap())
}

/// Every row of `sql` on the database at `url`, through a connection of its own, every value as
/// text (`|`-joined), sorted.
pub(crate) fn postgres_rows(url: &str, sql: &str) -> Vec<String> {
    off_runtime(move || {
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let mut rows: Vec<String> = client
            .simple_query(sql)
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

/// A scratch PostgreSQL database, dropped with everything connected to it when the test ends.
pub(crate) struct Scratch {
    admin_url: String,
    pub(crate) url: String,
    name: String,
    store: Option<PgStore>,
}

impl Scratch {
    /// Another store (node) on the scratch database.
    pub(crate) fn reopen(&self) -> PgStore {
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

/// A fresh scratch database (with no store open on it), or `None` when [`DATABASE_URL_VAR`] is
/// not set.
pub(crate) fn scratch_database() -> Option<Scratch> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let admin_url = std::env::var(DATABASE_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty())?;
    let name = format!(
        "tasklane_conf_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let url = with_database(&admin_url, &name);
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
    Some(Scratch {
        admin_url,
        url,
        name,
        store: None,
    })
}

/// A store on a fresh scratch database, or `None` when [`DATABASE_URL_VAR`] is not set. The
/// scratch database (its guard) shuts the store down before dropping the database.
pub(crate) async fn postgres_store() -> Option<(Scratch, PgStore)> {
    let mut scratch = scratch_database()?;
    let store = scratch.reopen();
    scratch.store = Some(store.clone());
    Some((scratch, store))
}

/// The URL of the scratch database a PostgreSQL store of this suite is on.
async fn postgres_url(store: &PgStore) -> String {
    let name = store
        .read_db(|db| {
            let row = db.conn.query_one("SELECT current_database()", &[])?;
            Ok(row.get::<_, String>(0))
        })
        .await
        .unwrap();
    with_database(&std::env::var(DATABASE_URL_VAR).unwrap(), &name)
}

/// Every row of `sql` as `|`-joined text, sorted, read past the store on a connection of its own.
pub(crate) async fn rows(store: &Store, sql: &str) -> Vec<String> {
    match store {
        Store::Sqlite(s) => {
            let conn = rusqlite::Connection::open(s.path()).unwrap();
            recount::sqlite_rows(&conn, sql)
        }
        Store::Postgres(s) => postgres_rows(&postgres_url(s).await, sql),
    }
}

/// The maintained counters and flags equal a recount from the tasks, runs and edges (with the
/// backend's own recount SQL).
pub(crate) async fn assert_counters_match_a_recount(store: &Store) {
    match store {
        Store::Sqlite(s) => {
            let conn = rusqlite::Connection::open(s.path()).unwrap();
            recount::assert_sqlite_counters_match_a_recount(&conn);
        }
        Store::Postgres(s) => {
            let url = postgres_url(s).await;
            recount::assert_postgres_counters_match_a_recount(&|sql| postgres_rows(&url, sql));
        }
    }
}

/// Closes `store` and opens the database again: a restarted server.
pub(crate) async fn reopen(store: Store) -> Store {
    match store {
        Store::Sqlite(s) => {
            let path = s.path().to_path_buf();
            close(Store::Sqlite(s)).await;
            SqliteStore::open(&path, StoreOptions::default())
                .unwrap()
                .into()
        }
        Store::Postgres(s) => {
            let url = postgres_url(&s).await;
            close(Store::Postgres(s)).await;
            tokio::task::spawn_blocking(move || PgStore::open(PgOptions::new(url)).unwrap())
                .await
                .unwrap()
                .into()
        }
    }
}

/// A second server on the same database, where the backend allows one (PostgreSQL); `None`
/// on SQLite, whose file has one server.
pub(crate) async fn second_server(store: &Store) -> Option<Store> {
    match store {
        Store::Sqlite(_) => None,
        Store::Postgres(s) => {
            let url = postgres_url(s).await;
            let other =
                tokio::task::spawn_blocking(move || PgStore::open(PgOptions::new(url)).unwrap())
                    .await
                    .unwrap();
            Some(other.into())
        }
    }
}

/// Stops `store`'s writer off the runtime threads (it joins threads).
pub(crate) async fn close(store: Store) {
    tokio::task::spawn_blocking(move || {
        store.shutdown();
        drop(store);
    })
    .await
    .unwrap();
}

/// A backend's store or the [`Store`] of one: the helpers below take either.
pub(crate) trait AnyStore: Clone + Into<Store> {
    fn any(&self) -> Store {
        self.clone().into()
    }
}

impl<S: Clone + Into<Store>> AnyStore for S {}

pub(crate) async fn insert(store: &impl AnyStore, tasks: Vec<Task>) {
    store
        .any()
        .write(move |w| tasks.iter().try_for_each(|t| w.insert_task(t)))
        .await
        .unwrap();
}

pub(crate) async fn insert_result(store: &impl AnyStore, t: Task) -> Result<()> {
    store.any().write(move |w| w.insert_task(&t)).await
}

pub(crate) async fn get_task(store: &impl AnyStore, id: &str) -> Option<Task> {
    let id = id.to_string();
    store.any().read(move |r| r.task(&id)).await.unwrap()
}

pub(crate) async fn list(store: &impl AnyStore, filter: TaskFilter) -> Vec<String> {
    store
        .any()
        .read(move |r| r.list_tasks(&filter))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect()
}

/// Inserts each task with its run.
pub(crate) async fn insert_runs(store: &impl AnyStore, rows: Vec<(Task, Run)>) {
    store
        .any()
        .write(move |w| {
            rows.iter().try_for_each(|(t, r)| {
                w.insert_task(t)?;
                w.insert_run(r)
            })
        })
        .await
        .unwrap();
}

/// The ids of `claim_class_heads(audiences, min)`, sorted.
pub(crate) async fn heads(store: &impl AnyStore, audiences: &[&str], min: Priority) -> Vec<String> {
    let audiences: Vec<String> = audiences.iter().map(|a| a.to_string()).collect();
    let mut ids: Vec<String> = store
        .any()
        .read(move |r| r.claim_class_heads(&audiences, min))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

/// Occupies the writer until the returned sender is used (or dropped), so the commands queued
/// meanwhile are drained into one batch.
pub(crate) async fn hold_writer(
    store: &impl AnyStore,
) -> (mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let s = store.any();
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

/// Waits until at least `n` writes are queued behind the writer (polls the queue's length).
pub(crate) async fn wait_queued(store: &impl AnyStore, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = store.any();
    while store.queued_writes() < n {
        assert!(Instant::now() < deadline, "the queue never reached {n}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
