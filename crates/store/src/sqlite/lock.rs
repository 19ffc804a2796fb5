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

/// `<database>.lock`, beside the database.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
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
