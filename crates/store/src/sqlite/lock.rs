//! One server per database file.
//!
//! Wake-ups of parked claimers and the live event streams are driven by the serving process's own
//! commits; a second server on the same file would commit writes the first never hears about, so
//! its waiters and streams would silently miss them. A server therefore holds an exclusive lock
//! on `<database>.lock` for as long as it runs. The operating system drops the lock when the
//! process ends, however it ends, so a crashed server never leaves a stale lock behind. Other
//! tools that open the database (the `tasklane token` CLI) do not take it.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use tasklane_core::{Error, Result};

/// The held lock; released when dropped (or when the process exits).
pub(crate) struct ServeLock {
    _file: File,
}

/// `<database>.lock`, beside the database's real file: a symbolic link or another spelling of
/// the path (`./x.db`, `dir/../x.db`) leads to the same lock.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut path = real_path(db).into_os_string();
    path.push(".lock");
    PathBuf::from(path)
}

/// The database's canonical path; for a file not created yet, its canonical directory joined
/// with its name.
fn real_path(db: &Path) -> PathBuf {
    if let Ok(real) = db.canonicalize() {
        return real;
    }
    let dir = match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match (dir.canonicalize(), db.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => db.to_path_buf(),
    }
}

impl ServeLock {
    pub(crate) fn acquire(db: &Path) -> Result<ServeLock> {
        let path = lock_path(db);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                Error::Storage(format!("cannot open lock file {}: {e}", path.display()))
            })?;
        match file.try_lock() {
            Ok(()) => Ok(ServeLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Storage(format!(
                "database {} is already served by another tasklane process (it holds the lock file {}); stop that server first",
                db.display(),
                path.display()
            ))),
            Err(TryLockError::Error(e)) => Err(Error::Storage(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}
