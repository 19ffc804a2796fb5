//! Wake-ups from the other nodes: one connection per node `LISTEN`s on [`CHANNEL`].
//!
//! Every commit that appended events notifies with its node and highest sequence; PostgreSQL
//! delivers it at commit, never before. A notification from another node raises the
//! committed-sequence watch (SSE streams read on) and bumps the remote-commit watch (parked
//! claims retry). A safety poll of the highest sequence once a second covers a notification lost
//! with a connection, and after a reconnect everything is woken once. Each connect registers the
//! node first (`nodes`), which is what makes the other nodes' writers notify it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};
use tokio::sync::watch;

use super::background::Background;
use super::conn::{Conn, RECONNECT_PAUSE};
use super::{nodes, schema, PgOptions, CHANNEL};
use crate::write_queue::WriterShared;

/// How long one wait for notifications lasts, which bounds how long stopping takes.
const WAIT: Duration = Duration::from_millis(200);
/// The safety poll's period.
const POLL: Duration = Duration::from_secs(1);

/// A new identity for a server among those sharing the database: its notifications (so its own
/// commits do not wake it a second time) and its row of `tasklane_nodes`. One per store opened,
/// so that two stores in one process are two servers too.
pub(crate) fn new_node_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() >> 1) as i64
}

/// The notification payload of a commit of server `node` whose highest event sequence is `seq`.
pub(crate) fn payload(node: i64, seq: i64) -> String {
    format!("{node}:{seq}")
}

fn parse(payload: &str) -> Option<(i64, i64)> {
    let (node, seq) = payload.split_once(':')?;
    Some((node.parse().ok()?, seq.parse().ok()?))
}

/// What the listener shares with the store handle.
pub(crate) struct Wakes {
    /// The writer's state, whose committed-sequence watch the listener raises too.
    pub(crate) writer: Arc<WriterShared>,
    /// Bumped whenever another node (or the safety poll) reports commits.
    pub(crate) remote_commits: watch::Sender<u64>,
    /// This server ([`new_node_id`]).
    pub(crate) node: i64,
    /// When this server started, as it registers in `tasklane_nodes`.
    pub(crate) started_at: Ts,
}

/// Starts the node's listener.
pub(crate) fn start(opts: PgOptions, shared: Arc<Wakes>) -> Result<Background> {
    Background::start("tasklane-pg-listener", move |stop| {
        run(&opts, &shared, stop)
    })
}

fn run(opts: &PgOptions, shared: &Wakes, stop: &AtomicBool) {
    let mut lost = false;
    while !stop.load(Ordering::Relaxed) {
        match listen(opts, shared, stop, &mut lost) {
            Ok(()) => return,
            Err(e) => {
                if !lost {
                    tracing::warn!(error = %e, "lost the notification connection; reconnecting");
                }
                lost = true;
                std::thread::sleep(RECONNECT_PAUSE);
            }
        }
    }
}

/// Listens until stopped (`Ok`) or the connection fails (`Err`).
fn listen(opts: &PgOptions, shared: &Wakes, stop: &AtomicBool, lost: &mut bool) -> Result<()> {
    let mut conn = Conn::connect(opts)?;
    nodes::register(&mut conn, shared.node, shared.started_at)?;
    conn.batch(&format!("LISTEN {CHANNEL}"))?;
    if std::mem::take(lost) {
        tracing::info!("notification connection restored");
    }
    // Whatever was missed while not listening: catch up and wake everyone once.
    let wake = || shared.remote_commits.send_modify(|n| *n += 1);
    poll(&mut conn, shared, Duration::ZERO)?;
    wake();
    let mut polled = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Under steady traffic notifications keep coming: everything is acted on as it arrives,
        // and the safety poll still runs on time.
        while let Some(n) = conn.next_notification(WAIT)? {
            if let Some((node, seq)) = parse(n.payload()) {
                shared.writer.publish(seq);
                if node != shared.node {
                    wake();
                }
            }
            if stop.load(Ordering::Relaxed) || polled.elapsed() >= POLL {
                break;
            }
        }
        if polled.elapsed() >= POLL {
            if poll(&mut conn, shared, polled.elapsed())? {
                wake();
            }
            polled = Instant::now();
        }
        if conn.is_closed() {
            return Err(Error::Unavailable("notification connection closed".into()));
        }
    }
    Ok(())
}

/// Raises the committed-sequence watch to the highest committed sequence; true if it moved.
/// First marks this server seen (it last did `since` ago; see `nodes::seen`).
fn poll(conn: &mut Conn, shared: &Wakes, since: Duration) -> Result<bool> {
    nodes::seen(conn, shared.node, shared.started_at, since)?;
    let seq = schema::max_committed_sequence(conn)?;
    let before = *shared.writer.committed_seq.borrow();
    shared.writer.publish(seq);
    Ok(seq > before)
}
