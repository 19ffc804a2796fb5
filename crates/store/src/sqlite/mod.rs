//! The embedded SQLite backend.
//!
//! Writes go through one writer thread that group-commits (see `writer.rs`); reads run on a small
//! pool of read-only connections, each inside one read transaction. In WAL mode readers see the
//! last committed state and never wait for the writer.

pub mod backup;
mod checkpoint;
mod counters;
mod error;
mod lock;
pub mod monitor;
mod observe;
#[doc(hidden)]
pub mod page_cache;
mod read;
mod rows;
mod schema;
pub(crate) mod status_sets;
mod wal_buffer;
mod write;
mod writer;

#[cfg(test)]
mod tests;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};
use tasklane_core::observe::counters::CounterDeltas;
use tasklane_core::store::{ReadStore, WriteStore};
use tasklane_core::{Error, Result};
use tokio::sync::Semaphore;

use self::error::sql_err;
use self::writer::Writer;
use crate::known_rows::KnownRows;
use crate::read_permits::run_read;
use crate::write_queue::{store_entry_points, Backend, CommandDb, WriteQueue};

pub use self::schema::SCHEMA_VERSION;

/// Tuning of the SQLite backend.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Read-only connections in the pool (at most this many reads run at once).
    pub read_connections: usize,
    /// Writes waiting for the writer beyond this many are refused with `Unavailable`, so overload
    /// turns into quick 503s instead of unbounded memory and latency.
    pub max_queued_writes: usize,
    /// Likewise for the request bytes those writes hold (see [`SqliteStore::write_sized`]): ten
    /// thousand queued 4 MiB bodies would otherwise be 40 GiB of memory.
    pub max_queued_bytes: usize,
    /// Most commands committed by one transaction.
    pub max_batch: usize,
    /// The writer checkpoints and truncates the WAL once its file reaches this many bytes, so
    /// the WAL stays near this size under any sustained load.
    pub wal_limit_bytes: u64,
    /// Hold `<database>.lock` while open and refuse to open if another process holds it: set by
    /// `tasklane serve`, which must be the only server of its file (see `lock.rs`).
    pub serve_lock: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            read_connections: 4,
            max_queued_writes: 10_000,
            max_queued_bytes: 64 << 20,
            max_batch: 256,
            wal_limit_bytes: 32 << 20,
            serve_lock: false,
        }
    }
}

/// Statements kept prepared per connection. `list_tasks` builds one statement per filter shape,
/// so this is well above the number of fixed statements.
const STATEMENT_CACHE: usize = 256;

/// How long a connection waits for a lock another connection holds.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(5000);

/// One connection viewed as a store: a reader's snapshot or the writer's transaction.
pub(crate) struct Db<'c> {
    conn: &'c Connection,
    /// Highest sequence appended by the current command; the writer publishes it only once the
    /// command's savepoint is kept and the batch committed.
    appended: Option<i64>,
    /// Counter changes of the current command, applied by the writer if its savepoint is kept.
    deltas: CounterDeltas,
    /// Activity and sequence raises the current command owes its tasks (see `crate::task_marks`).
    marks: crate::task_marks::TaskMarks,
    /// The command's task UPDATEs, written with the marks (`Db::flush_task_writes`).
    unwritten_tasks: Vec<write::UnwrittenTask>,
    /// What the open item (`WriteStore::begin_item`) restores if it is rolled back: `appended`
    /// (so that no rolled-back sequence is ever published) and the command's counter changes
    /// from before the item.
    item_start: Option<write::ItemStart>,
    /// The rows the writer's current command has read or written (`None` on a reader).
    known: Option<KnownRows>,
    /// The log names its events by sequence (`schema::events_named_by_sequence`).
    events_by_sequence: bool,
}

impl<'c> Db<'c> {
    fn new(conn: &'c Connection) -> Self {
        Db {
            conn,
            appended: None,
            deltas: CounterDeltas::default(),
            marks: Default::default(),
            unwritten_tasks: Vec::new(),
            item_start: None,
            known: None,
            events_by_sequence: false,
        }
    }

    /// The view of one command of the writer.
    fn for_command(conn: &'c Connection, events_by_sequence: bool) -> Self {
        Db {
            known: Some(KnownRows::default()),
            events_by_sequence,
            ..Db::new(conn)
        }
    }

    /// Remembers runs the writer's command read.
    fn saw_runs(&mut self, runs: &[tasklane_core::model::Run]) {
        if let Some(known) = self.known.as_mut() {
            runs.iter().for_each(|run| known.saw_run(run));
        }
    }
}

impl CommandDb for Db<'_> {
    fn item_open(&self) -> bool {
        self.item_start.is_some()
    }

    /// The command's task UPDATEs and marks, written inside its savepoint.
    fn finish_command(&mut self) -> Result<()> {
        self.flush_task_writes()
    }
}

impl Backend for SqliteStore {
    type Db<'c> = Db<'c>;
    const WRITER_STOPPED: &'static str = "the sqlite writer stopped";
    const WRITER_PANICKED: &'static str = "sqlite writer thread panicked";
}

/// The embedded SQLite store. Cheap to clone; all clones share one writer and one reader pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The writer's queue and thread.
    queue: WriteQueue<SqliteStore>,
    readers: Mutex<Vec<Connection>>,
    checkpointer: Mutex<checkpoint::Checkpointer>,
    read_permits: Arc<Semaphore>,
    /// Held until the store is dropped; declared last, so released after the writer stopped.
    _serve_lock: Option<lock::ServeLock>,
}

impl SqliteStore {
    /// Opens (creating parent dirs and the file if needed) and migrates. Refuses a database whose
    /// schema version is newer than this binary knows.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<SqliteStore> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::Storage(format!("cannot create directory {}: {e}", dir.display()))
            })?;
        }
        // Taken before anything touches the database, so a second server changes nothing.
        let serve_lock = opts
            .serve_lock
            .then(|| lock::ServeLock::acquire(path))
            .transpose()?;
        let wal_limit = opts.wal_limit_bytes.max(1);
        let mut conn = open_writer(path, wal_limit)?;
        schema::migrate(&mut conn)?;
        let last_seq = last_sequence(&conn)?;
        let events_by_sequence = schema::events_named_by_sequence(&conn)?;

        let read_connections = opts.read_connections.max(1);
        // Opened after the writer has created the file and switched it to WAL, which a read-only
        // connection cannot do itself; one reader up front also surfaces a broken setup at start.
        let first_reader = open_reader(path)?;

        let (queue, writer_queue) = WriteQueue::new(
            opts.max_queued_writes,
            opts.max_queued_bytes,
            opts.max_batch,
            last_seq,
        );
        let checkpoint_turn = Arc::new(Mutex::new(()));
        let wal_frames = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(sql_err)?;
        let writer = Writer {
            conn,
            queue: writer_queue,
            wal: wal_path(path),
            wal_limit,
            wal_frames: wal_frames.clone(),
            page_size: page_size.max(512) as u64,
            checkpoint_turn: checkpoint_turn.clone(),
            recovering: false,
            events_by_sequence,
        };
        let checkpointer = checkpoint::Checkpointer::start(path, checkpoint_turn, wal_frames)?;
        let thread = std::thread::Builder::new()
            .name("tasklane-sqlite-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|e| Error::Storage(format!("cannot start the sqlite writer: {e}")))?;
        queue.writer_started(thread);

        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                queue,
                checkpointer: Mutex::new(checkpointer),
                readers: Mutex::new(vec![first_reader]),
                read_permits: Arc::new(Semaphore::new(read_connections)),
                _serve_lock: serve_lock,
            }),
        })
    }

    /// [`SqliteStore::write_sized`] for a command that holds no request data.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut dyn WriteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.write_sized(0, f).await
    }

    /// Runs `f` on a read-only connection from the pool, in `spawn_blocking`, inside one read
    /// transaction (a consistent snapshot).
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut dyn ReadStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.read_db(move |db: &mut Db<'_>| f(db)).await
    }

    /// The read path of [`SqliteStore::read`] for closures over the connection's [`Db`], whatever
    /// store trait they see it as.
    pub(crate) async fn read_db<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Db<'_>) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.inner.clone();
        run_read(&self.inner.read_permits, move || {
            inner.with_reader(|conn| read_snapshot(conn, f))
        })
        .await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

store_entry_points!(SqliteStore, Db);

impl Inner {
    fn shutdown(&self) {
        self.queue.shutdown();
        self.checkpointer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .stop();
    }

    /// Lends a pooled reader (opening one if the pool is empty) and takes it back unless the
    /// read left it unusable.
    fn with_reader<R>(&self, f: impl FnOnce(&Connection) -> (Result<R>, bool)) -> Result<R> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let (result, reusable) = f(&conn);
        if reusable {
            self.readers
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(conn);
        }
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Runs `f` in one read transaction. Returns the result and whether the connection is clean.
fn read_snapshot<R>(
    conn: &Connection,
    f: impl FnOnce(&mut Db<'_>) -> Result<R>,
) -> (Result<R>, bool) {
    if let Err(e) = exec(conn, "BEGIN") {
        return (Err(e), conn.is_autocommit());
    }
    let mut db = Db::new(conn);
    let result = catch_unwind(AssertUnwindSafe(|| f(&mut db)))
        .unwrap_or_else(|_| Err(Error::Storage("internal panic".to_string())));
    // Nothing to keep from a read; ending the transaction releases the snapshot so the WAL can
    // be checkpointed past it.
    let ended = if conn.is_autocommit() {
        Ok(())
    } else {
        exec(conn, "ROLLBACK")
    };
    (result, ended.is_ok() && conn.is_autocommit())
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(sql_err)
}

/// SQLite's write-ahead log: the database path with `-wal` appended.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// The length of the file at `path`, read without its timestamps (0 when there is none).
///
/// Asking for a file's modification time (as `std::fs::metadata` does) makes Linux's
/// multigrain timestamps (6.13 and later; ext4, XFS, btrfs, tmpfs) record the next write's
/// time at full precision, which marks the inode dirty, and the fsync of every following
/// commit then writes the inode too: one more device round trip per commit, 116 → 156 µs
/// per fsync of a WAL-sized overwrite on ext4 here. The writer looks at the WAL's length
/// after every batch.
fn file_len(path: &Path) -> u64 {
    #[cfg(target_os = "linux")]
    if let Some(len) = size_by_statx(path) {
        return len;
    }
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The size alone, by `statx`; `None` if it cannot say (no such file, or a kernel without it).
#[cfg(target_os = "linux")]
fn size_by_statx(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a valid C string and `stat` a plain struct the call fills in.
    let mut stat: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            path.as_ptr(),
            0,
            libc::STATX_SIZE,
            &mut stat,
        )
    };
    (rc == 0 && stat.stx_mask & libc::STATX_SIZE != 0).then_some(stat.stx_size)
}

/// The page size of new databases. A claim or a completion changes a few rows in each of many
/// tables and indexes, so each commit writes some 18 pages to the WAL, and every byte of them is
/// checksummed, written and synced: pages of 2 KiB instead of SQLite's default 4 KiB halve those
/// bytes, while every row but an unusually large one still fits in one page. Existing databases
/// keep the page size they were created with.
const PAGE_SIZE: u32 = 2048;

/// The writer's page cache, in KiB (SQLite's default is 2 MiB). Every claim and completion
/// touches pages all over the tasks, runs and events tables and their indexes; pages it finds
/// cached it neither reads from the file nor parses again. With the default cache, a database of
/// 8,000 runs already made the writer read pages back on most commits. Only with the page cache
/// layer in place: without it every commit that split a page walks the whole cache
/// (`page_cache.rs`), and a large one measured slower than the default.
const WRITER_CACHE_KIB: u32 = 64 * 1024;

fn open_writer(path: &Path, wal_limit: u64) -> Result<Connection> {
    // Before anything initializes SQLite, which fixes its configuration.
    let cache_size = if page_cache::install() {
        format!("PRAGMA cache_size = -{WRITER_CACHE_KIB};")
    } else {
        tracing::debug!("sqlite was in use before the page cache layer: default writer cache");
        String::new()
    };
    let opened = if wal_buffer::register() {
        let vfs = wal_buffer::VFS_NAME.to_str().expect("the name is ASCII");
        Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs)
    } else {
        Connection::open(path)
    };
    let conn = opened
        .map_err(|e| Error::Storage(format!("cannot open database {}: {e}", path.display())))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
    // Checked before anything below writes to the file, so a newer database is left untouched.
    schema::check_not_newer(&conn)?;
    // Takes effect only when this creates the file (SQLite fixes a database's page size then).
    conn.execute_batch(&format!("PRAGMA page_size = {PAGE_SIZE}"))
        .map_err(sql_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sql_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Storage(format!(
            "database {} cannot use WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    // FULL: a commit is on disk before anyone is told it happened.
    // journal_size_limit: when SQLite restarts the WAL by itself, the file shrinks back to the
    // limit instead of keeping the size of its largest burst. wal_autocheckpoint 0: checkpoints
    // run on their own thread (checkpoint.rs) and, past the limit, between the writer's batches.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         {cache_size}
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = {wal_limit};"
    ))
    .map_err(sql_err)?;
    // wal_buffer relies on every commit syncing the WAL before publishing it.
    let synchronous: i64 = conn
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .map_err(sql_err)?;
    if synchronous < 2 {
        return Err(Error::Storage(format!(
            "database {} would not sync every commit (synchronous = {synchronous})",
            path.display()
        )));
    }
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| {
        Error::Unavailable(format!(
            "cannot open database {} for reading: {e}",
            path.display()
        ))
    })?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sql_err)?;
    Ok(conn)
}

/// The highest sequence ever handed out (also counting events deleted since), so the watch
/// starts where the log is.
fn last_sequence(conn: &Connection) -> Result<i64> {
    conn.prepare_cached(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'task_events'), 0)",
    )
    .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
    .map_err(sql_err)
}
