//! Keeps the claim queue (`run_queue`, see `schema`'s migration 5) free of dead rows.
//!
//! Every claim deletes the claimed run's row, and PostgreSQL keeps its index entry until the
//! table is vacuumed: a claim's seek to the head of a class steps over every entry claimed since.
//! Autovacuum visits a database once a minute at most, which at a thousand claims a second is
//! sixty thousand entries to step over. So each node checks the table's dead rows once a second
//! and vacuums it past [`DEAD_ROWS`]. The table holds queued runs only, so a vacuum costs what
//! the queue is, not the history; `SKIP_LOCKED` leaves it to whichever node got there first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tasklane_core::Result;

use super::background::Background;
use super::conn::{Conn, RECONNECT_PAUSE};
use super::PgOptions;

/// How often the dead rows are checked (PostgreSQL's statistics move about as often).
const CHECK: Duration = Duration::from_secs(1);
/// Dead rows that make a vacuum worth it: about ten index pages for a seek to step over.
const DEAD_ROWS: i64 = 1_000;
/// How long one sleep lasts, which bounds how long stopping takes.
const NAP: Duration = Duration::from_millis(200);

/// Starts the node's vacuum of the claim queue.
pub(crate) fn start(opts: PgOptions) -> Result<Background> {
    Background::start("tasklane-pg-vacuum", move |stop| run(&opts, stop))
}

fn run(opts: &PgOptions, stop: &AtomicBool) {
    let mut conn: Option<Conn> = None;
    let mut failing = false;
    let mut checked = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(NAP);
        if checked.elapsed() < CHECK {
            continue;
        }
        checked = Instant::now();
        let outcome = match conn.as_mut() {
            Some(c) => vacuum_if_due(c),
            None => Conn::connect(opts).and_then(|mut c| {
                let done = vacuum_if_due(&mut c);
                conn = Some(c);
                done
            }),
        };
        match outcome {
            Ok(()) => failing = false,
            Err(e) => {
                // Said once per outage: the writer and the listener report the database's state.
                if !failing {
                    tracing::warn!(error = %e, "could not vacuum the claim queue; retrying");
                }
                failing = true;
                if conn.as_ref().is_none_or(Conn::is_closed) {
                    conn = None;
                    std::thread::sleep(RECONNECT_PAUSE);
                }
            }
        }
    }
}

/// Vacuums `run_queue` if it holds [`DEAD_ROWS`] dead rows or more.
fn vacuum_if_due(conn: &mut Conn) -> Result<()> {
    let dead: i64 = conn
        .query_one(
            "SELECT COALESCE(n_dead_tup, 0) FROM pg_stat_user_tables \
             WHERE relid = 'run_queue'::regclass",
            &[],
        )?
        .get(0);
    if dead >= DEAD_ROWS {
        conn.batch("VACUUM (SKIP_LOCKED) run_queue")?;
    }
    Ok(())
}
