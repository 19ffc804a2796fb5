//! WAL checkpoints on their own thread and connection.
//!
//! SQLite's automatic checkpoint runs inside the committing connection, which here is the single
//! writer: every thousand pages a commit would stall while pages are copied into the database file
//! and fsync'd. A PASSIVE checkpoint from another connection does most of that copying beside the
//! writer without blocking it. Under sustained writes it never reaches the end of the WAL, so the
//! writer finishes the job between batches once the WAL passes its limit (`writer.rs`); the two
//! take turns through one lock, because SQLite refuses a checkpoint while another one runs.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;
use tasklane_core::{Error, Result};

use super::error::sql_err;

const INTERVAL: Duration = Duration::from_millis(200);

/// The running checkpointer; dropping `stop` (via [`Checkpointer::stop`]) ends it.
pub(crate) struct Checkpointer {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// `wal_frames` receives the number of frames the WAL holds after each pass.
    pub(crate) fn start(
        path: &Path,
        turn: Arc<Mutex<()>>,
        wal_frames: Arc<AtomicU64>,
    ) -> Result<Checkpointer> {
        let conn = Connection::open(path)
            .map_err(|e| Error::Storage(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(super::BUSY_TIMEOUT).map_err(sql_err)?;
        let (stop, stopped) = channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tasklane-sqlite-checkpoint".to_string())
            .spawn(move || loop {
                match stopped.recv_timeout(INTERVAL) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let _turn = turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
                    Ok(frames) => wal_frames.store(frames.max(0) as u64, Ordering::Relaxed),
                    Err(e) => tracing::warn!(error = %e, "wal checkpoint failed; retrying"),
                }
            })
            .map_err(|e| Error::Storage(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("sqlite checkpoint thread panicked");
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}
