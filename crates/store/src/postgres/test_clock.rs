//! The service's test time: one row (`tasklane_test_clock`) that servers started with the test
//! clock share, so that moving time on one server moves it for the whole service.
//!
//! Only the storage lives here: read the stored time, advance it, and report it to the server at
//! the start of every write transaction. What a server does with a reading (its clock never goes
//! back) is the server's rule. Servers on the real clock never touch the row: nothing here runs
//! unless the server asked for it.

use std::sync::OnceLock;

use tasklane_core::time::Ts;
use tasklane_core::Result;

use super::conn::Conn;
use super::PgStore;

/// Who hears the service's test time at the start of each write transaction: nobody until a
/// server in test-clock mode follows it.
#[derive(Default)]
pub(crate) struct Follower {
    report: OnceLock<Box<dyn Fn(Ts) + Send + Sync>>,
}

impl Follower {
    /// Reads the test time right after the transaction's BEGIN and write lock (which travel
    /// with it, see `conn`), and reports it. Does nothing unless followed: on the real clock a
    /// transaction costs no extra statement. Under the write lock, so every command of the batch
    /// runs at or after any advance committed before it (an advance goes through the writer
    /// too).
    pub(crate) fn begin(&self, conn: &mut Conn) -> Result<()> {
        let Some(report) = self.report.get() else {
            return Ok(());
        };
        if let Some(now) = read(conn)? {
            report(now);
        }
        Ok(())
    }
}

/// The service's test time, if a server has started on the test clock.
fn read(conn: &mut Conn) -> Result<Option<Ts>> {
    Ok(conn
        .query_opt("SELECT now_us FROM tasklane_test_clock", &[])?
        .map(|row| Ts(row.get(0))))
}

/// Moves the service's test time to `micros` past the later of itself and `floor` (`floor` +
/// `micros` if there is none yet) and returns it. One statement, so two advances at once add up.
fn advance(conn: &mut Conn, floor: Ts, micros: i64) -> Result<Ts> {
    let row = conn.query_one(
        "INSERT INTO tasklane_test_clock (singleton, now_us)
         VALUES (TRUE, $1::BIGINT + $2::BIGINT)
         ON CONFLICT (singleton) DO UPDATE
         SET now_us = GREATEST(tasklane_test_clock.now_us, $1::BIGINT) + $2::BIGINT
         RETURNING now_us",
        &[&floor.micros(), &micros],
    )?;
    Ok(Ts(row.get(0)))
}

impl PgStore {
    /// The service's test time: `None` until a server on the test clock started on the database.
    pub async fn test_clock(&self) -> Result<Option<Ts>> {
        self.read_db(|db| read(db.conn)).await
    }

    /// Advances the service's test time by `micros` from the later of itself and `floor` (this
    /// server's clock), in the writer, and returns it once committed.
    pub async fn advance_test_clock(&self, floor: Ts, micros: i64) -> Result<Ts> {
        self.submit(0, move |db: &mut super::Db<'_>| {
            advance(db.conn, floor, micros)
        })
        .await
    }

    /// Has the writer read the service's test time at the start of every write transaction,
    /// under the write lock, and pass it to `report`, before any command of the transaction
    /// runs. For servers on the test clock only; a store follows one clock, a second call is
    /// ignored.
    pub fn follow_test_clock(&self, report: impl Fn(Ts) + Send + Sync + 'static) {
        let _ = self.inner.test_clock.report.set(Box::new(report));
    }
}

#[cfg(test)]
mod tests {
    use tasklane_core::model::Priority;
    use tasklane_core::time::Ts;

    use crate::conformance::fixtures::class_run;
    use crate::conformance::{off_runtime, postgres_store, scratch_database, DATABASE_URL_VAR};
    use crate::postgres::{PgOptions, PgStore, SCHEMA_VERSION};

    macro_rules! skip_without_postgres {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => {
                    eprintln!("{DATABASE_URL_VAR} is not set: skipped");
                    return;
                }
            }
        };
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn advances_from_two_stores_add_up_and_followers_hear_them() {
        let (scratch, a) = skip_without_postgres!(postgres_store().await);
        let b = scratch.reopen();
        assert_eq!(a.test_clock().await.unwrap(), None);
        let start = Ts(1_000_000);
        assert_eq!(a.advance_test_clock(start, 0).await.unwrap(), start);
        // B's floor is behind the service's time: it advances from the service's time.
        assert_eq!(
            b.advance_test_clock(Ts(0), 10_000_000).await.unwrap(),
            Ts(11_000_000)
        );
        assert_eq!(
            a.advance_test_clock(start, 10_000_000).await.unwrap(),
            Ts(21_000_000)
        );
        assert_eq!(b.test_clock().await.unwrap(), Some(Ts(21_000_000)));
        let heard = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let h = heard.clone();
        a.follow_test_clock(move |ts| h.store(ts.micros(), std::sync::atomic::Ordering::SeqCst));
        a.write_sized(0, |_| Ok(())).await.unwrap();
        assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), 21_000_000);
        off_runtime(move || drop(b));
    }

    /// The test clock's table came with a second migration, the claim queue with a fifth: a
    /// database of the first is migrated, and one from a newer Tasklane is still refused.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_first_version_database_is_migrated_and_a_newer_one_refused() {
        let scratch = skip_without_postgres!(scratch_database());
        let url = scratch.url.clone();
        let sql = move |sql: String| {
            let url = url.clone();
            off_runtime(move || {
                let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                client.batch_execute(&sql).unwrap();
            })
        };
        // A database as the first version left it, with a run queued for claims.
        let first = scratch.reopen();
        let (t, r) = class_run("r-1", Some("g|"), Priority::Medium, &[], 10);
        first
            .write_sized(0, move |w| {
                w.insert_task(&t)?;
                w.insert_run(&r)
            })
            .await
            .unwrap();
        off_runtime(move || drop(first));
        sql(
            "DROP TABLE tasklane_test_clock; DROP TABLE tasklane_settings; \
             DROP TABLE run_queue; DROP FUNCTION tasklane_run_queue() CASCADE; \
             CREATE INDEX task_runs_claim_class ON task_runs \
                 (claim_audience, priority_rank, claim_caps, queued_at, id) \
                 WHERE status = 'queued' AND claim_audience IS NOT NULL; \
             UPDATE tasklane_schema SET version = 1"
                .into(),
        );
        let store = scratch.reopen();
        assert_eq!(store.test_clock().await.unwrap(), None);
        store.check_ready().await.unwrap();
        // The claim queue begins with the runs queued before it existed.
        let heads = store
            .read(|r| r.claim_class_heads(&["g|".to_string()], Priority::Low))
            .await
            .unwrap();
        let ids: Vec<String> = heads.into_iter().map(|run| run.id).collect();
        assert_eq!(ids, ["r-1"]);
        off_runtime(move || drop(store));
        sql(format!(
            "UPDATE tasklane_schema SET version = {}",
            SCHEMA_VERSION + 1
        ));
        let url = scratch.url.clone();
        let refused = off_runtime(move || PgStore::open(PgOptions::new(url)).err());
        let message = refused.expect("a newer schema is refused").to_string();
        assert!(message.contains("newer"), "{message}");
    }
}
