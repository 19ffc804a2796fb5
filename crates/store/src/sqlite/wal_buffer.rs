//! A VFS over the operating system's default one that hands each commit's WAL frames to the
//! kernel in one write.
//!
//! SQLite writes a WAL frame as two `pwrite`s (its 24-byte header, then the page), so a commit
//! of 20 pages costs 40 system calls, and one of 16 agents' grouped commands several hundred.
//! Measured here, 46 small writes took three times as long as one write of the same bytes,
//! which made these calls the largest single cost in the writer thread under load. Every other
//! call is passed through unchanged.
//!
//! Only WAL files (`SQLITE_OPEN_WAL`) are buffered, and only while SQLite appends to them:
//! consecutive writes are gathered, and anything else done with the file (a sync, a read, a
//! truncate, its size, closing it, a write elsewhere) first writes out what was gathered, in
//! the order SQLite issued it. What readers may see is therefore unchanged provided a commit
//! syncs the WAL before it publishes the frames in the WAL index, which SQLite does with
//! `synchronous = FULL`: the writer connection, the only one opened on this VFS, refuses to run
//! with anything less (`open_writer`). A crash loses at most frames that had not been synced,
//! as it could before.

use std::ffi::{c_int, c_void, CStr};
use std::mem::size_of;
use std::ptr;
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name the writer connection opens its database with.
pub(crate) const VFS_NAME: &CStr = c"tasklane-wal-buffer";

/// At most this many bytes are gathered: the unix VFS writes `len & 0x1ffff` bytes per call
/// (so a write of exactly 128 KiB would write nothing and fail as a full disk). A commit of 16
/// agents' commands, some 140 KB of frames, takes two writes.
const CAPACITY: usize = 0x1ffff;

#[cfg(test)]
thread_local! {
    /// Writes SQLite made to WAL files on this thread, and writes handed to the OS for them.
    static WRITES: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Counts a write for the tests; nothing outside them.
fn count(wal: u64, os: u64) {
    #[cfg(test)]
    WRITES.with(|w| w.set((w.get().0 + wal, w.get().1 + os)));
    #[cfg(not(test))]
    let _ = (wal, os);
}

/// Registers the VFS (once per process) and returns whether it is available. Not the default
/// VFS: connections opened without naming it are untouched.
pub(crate) fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find with NULL returns the default VFS, which lives for the
        // whole process. The new VFS is leaked, as SQLite requires it to outlive every
        // connection using it; it is registered once.
        unsafe {
            let os = ffi::sqlite3_vfs_find(ptr::null());
            if os.is_null() || (*os).xOpen.is_none() {
                return false;
            }
            let mut vfs = *os;
            vfs.pNext = ptr::null_mut();
            vfs.zName = VFS_NAME.as_ptr();
            vfs.szOsFile = (size_of::<WalFile>() as c_int) + (*os).szOsFile;
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            OS_VFS.get_or_init(|| OsVfs(os));
            ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK
        }
    })
}

struct OsVfs(*mut ffi::sqlite3_vfs);
// SAFETY: the default VFS is immutable once SQLite is initialised and safe to call from any
// thread (SQLite is built threadsafe).
unsafe impl Send for OsVfs {}
unsafe impl Sync for OsVfs {}

static OS_VFS: OnceLock<OsVfs> = OnceLock::new();

/// A WAL file as SQLite sees it: the OS VFS's own file follows this header in the same
/// allocation (`szOsFile` reserves room for both).
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    pending: *mut Pending,
}

/// Bytes SQLite wrote at `start..start + bytes.len()` that the OS has not been given yet, and
/// the file's methods: the OS file's, each one wrapped (a VFS may give files of one kind
/// different methods, so each file has its own table).
struct Pending {
    start: i64,
    bytes: Vec<u8>,
    methods: ffi::sqlite3_io_methods,
}

/// The OS VFS's file inside `file`.
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    (file as *mut u8).add(size_of::<WalFile>()) as *mut ffi::sqlite3_file
}

unsafe fn inner_methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*inner(file)).pMethods
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let os = OS_VFS.get().expect("registered before use").0;
    let os_open = (*os).xOpen.expect("checked at registration");
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Everything but a WAL is the OS VFS's file itself, in the room SQLite allocated.
        return os_open(os, name, file, flags, out_flags);
    }
    (*file).pMethods = ptr::null();
    let rc = os_open(os, name, inner(file), flags, out_flags);
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    let pending = Box::into_raw(Box::new(Pending {
        start: 0,
        bytes: Vec::new(),
        methods: wrapping(inner_methods(file)),
    }));
    (*(file as *mut WalFile)).pending = pending;
    (*file).pMethods = &(*pending).methods;
    rc
}

/// The methods of a buffered WAL: the OS file's version and entries, each going through here.
fn wrapping(os: &ffi::sqlite3_io_methods) -> ffi::sqlite3_io_methods {
    ffi::sqlite3_io_methods {
        iVersion: os.iVersion,
        xClose: Some(close),
        xRead: Some(read),
        xWrite: Some(write),
        xTruncate: Some(truncate),
        xSync: Some(sync),
        xFileSize: Some(file_size),
        xLock: Some(lock),
        xUnlock: Some(unlock),
        xCheckReservedLock: Some(check_reserved_lock),
        xFileControl: Some(file_control),
        xSectorSize: Some(sector_size),
        xDeviceCharacteristics: Some(device_characteristics),
        xShmMap: os.xShmMap.and(Some(shm_map)),
        xShmLock: os.xShmLock.and(Some(shm_lock)),
        xShmBarrier: os.xShmBarrier.and(Some(shm_barrier)),
        xShmUnmap: os.xShmUnmap.and(Some(shm_unmap)),
        xFetch: os.xFetch.and(Some(fetch)),
        xUnfetch: os.xUnfetch.and(Some(unfetch)),
    }
}

/// Hands what was gathered to the OS file.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    let pending = &mut *(*(file as *mut WalFile)).pending;
    if pending.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let write = inner_methods(file)
        .xWrite
        .expect("every VFS file can write");
    count(0, 1);
    let rc = write(
        inner(file),
        pending.bytes.as_ptr() as *const c_void,
        pending.bytes.len() as c_int,
        pending.start,
    );
    // Written or failed, the bytes are not written again: a failure is SQLite's to handle, as
    // it would be had the write not been deferred (the transaction fails with it).
    pending.bytes.clear();
    rc
}

/// Flushes, then calls the OS file's method: for everything whose result depends on the bytes.
macro_rules! flushed {
    ($file:expr, $method:ident ( $($arg:expr),* )) => {{
        let rc = flush($file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let method = inner_methods($file).$method.expect("present in the OS file's version");
        method(inner($file) $(, $arg)*)
    }};
}

/// Calls the OS file's method directly: for what the gathered bytes cannot affect.
macro_rules! passed {
    ($file:expr, $method:ident ( $($arg:expr),* )) => {{
        let method = inner_methods($file).$method.expect("present in the OS file's version");
        method(inner($file) $(, $arg)*)
    }};
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush(file);
    let closed = passed!(file, xClose());
    // The methods table lives in `pending`: unhook it before freeing it.
    (*file).pMethods = ptr::null();
    drop(Box::from_raw((*(file as *mut WalFile)).pending));
    (*(file as *mut WalFile)).pending = ptr::null_mut();
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    count(1, 0);
    let pending = &mut *(*(file as *mut WalFile)).pending;
    let len = amount.max(0) as usize;
    let follows = pending.start + pending.bytes.len() as i64 == offset;
    if !(follows && pending.bytes.len() + len <= CAPACITY) {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        if len >= CAPACITY {
            count(0, 1);
            return passed!(file, xWrite(data, amount, offset));
        }
        pending.start = offset;
    }
    pending
        .bytes
        .extend_from_slice(std::slice::from_raw_parts(data as *const u8, len));
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    flushed!(file, xRead(buf, amount, offset))
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed!(file, xTruncate(size))
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed!(file, xSync(flags))
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed!(file, xFileSize(size))
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    flushed!(file, xFileControl(op, arg))
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    flushed!(file, xFetch(offset, amount, out))
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    passed!(file, xLock(level))
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    passed!(file, xUnlock(level))
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    passed!(file, xCheckReservedLock(out))
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    passed!(file, xSectorSize())
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    passed!(file, xDeviceCharacteristics())
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    passed!(file, xShmMap(region, size, extend, out))
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    passed!(file, xShmLock(offset, n, flags))
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    passed!(file, xShmBarrier())
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    passed!(file, xShmUnmap(delete))
}

unsafe extern "C" fn unfetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    page: *mut c_void,
) -> c_int {
    passed!(file, xUnfetch(offset, page))
}

#[cfg(test)]
mod tests {
    use super::{CAPACITY, WRITES};
    use rusqlite::Connection;

    fn writes() -> (u64, u64) {
        WRITES.with(|w| w.get())
    }

    fn rows(conn: &Connection) -> (i64, i64) {
        conn.query_row(
            "SELECT count(*), COALESCE(sum(length(b)), 0) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    fn integrity(conn: &Connection) -> String {
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_commit_reaches_the_os_in_few_writes_and_every_reader_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = super::super::open_writer(&path, 64 << 20).unwrap();
        writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();

        // One small commit: one frame or two, header and page, in one write.
        let before = writes();
        writer
            .execute("INSERT INTO t (b) VALUES (randomblob(100))", [])
            .unwrap();
        let (wal, os) = (writes().0 - before.0, writes().1 - before.1);
        assert!(wal >= 2, "SQLite wrote {wal} times");
        assert_eq!(os, 1, "{wal} WAL writes became {os} OS writes");
        assert_eq!(rows(&reader), (1, 100));

        // A commit of some 600 KB: written in pieces no larger than the OS VFS accepts.
        let before = writes();
        writer
            .execute_batch(
                "BEGIN; \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) \
                 INSERT INTO t (b) SELECT randomblob(3000) FROM n; \
                 COMMIT;",
            )
            .unwrap();
        let (wal, os) = (writes().0 - before.0, writes().1 - before.1);
        let bytes = 200 * 3000;
        assert!(wal > 400, "SQLite wrote {wal} times");
        assert!(
            os <= (bytes * 2 / CAPACITY + 2) as u64,
            "{wal} WAL writes became {os} OS writes"
        );
        assert_eq!(rows(&reader), (201, 100 + bytes as i64));
        assert_eq!(integrity(&reader), "ok");
    }

    #[test]
    fn spilled_and_rolled_back_transactions_leave_the_same_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = super::super::open_writer(&path, 64 << 20).unwrap();
        // A tiny page cache makes SQLite write frames of an open transaction to the WAL,
        // read them back and write some of them again before the commit.
        writer
            .execute_batch(
                "PRAGMA cache_size = 8; \
                 CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB); \
                 CREATE INDEX t_b ON t (b);",
            )
            .unwrap();
        let fill = |n: i64, commit: &str| {
            writer
                .execute_batch(&format!(
                    "BEGIN; \
                     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
                     INSERT INTO t (b) SELECT randomblob(700) FROM n; \
                     UPDATE t SET b = randomblob(700) WHERE id % 3 = 0; \
                     {commit};"
                ))
                .unwrap();
        };
        fill(500, "COMMIT");
        fill(400, "ROLLBACK");
        fill(300, "COMMIT");
        let reader = Connection::open(&path).unwrap();
        assert_eq!(rows(&reader), (800, 800 * 700));
        assert_eq!(integrity(&reader), "ok");

        // What a fresh process finds after the writer is gone without a checkpoint.
        writer
            .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
            .unwrap();
        fill(100, "COMMIT");
        std::mem::forget(writer);
        drop(reader);
        let reopened = Connection::open(&path).unwrap();
        assert_eq!(rows(&reopened), (900, 900 * 700));
        assert_eq!(integrity(&reopened), "ok");
    }
}
