//! Online backups: a consistent copy of a database while its server runs.
//!
//! `VACUUM INTO` copies the database as one read transaction sees it, so the copy is a snapshot
//! of committed writes only, and it never blocks the server's writer (WAL readers do not). The
//! copy is opened read-only and without the server's lock (`lock.rs`), like `tasklane token`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use tasklane_core::{Error, Result};

use super::error::sql_err;
use super::schema;

/// What a database file holds, as read from a copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseSummary {
    pub schema_version: i64,
    pub tasks: i64,
    pub runs: i64,
    pub events: i64,
    pub bytes: u64,
}

fn open_read_only(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::Storage(format!("cannot open database {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql_err)?;
    Ok(conn)
}

/// Writes a consistent copy of the Tasklane database `source` to the new file `dest`, which
/// must not exist. A newer database than this binary knows is refused, like `serve` refuses it.
pub fn vacuum_into(source: &Path, dest: &Path) -> Result<()> {
    if !source.is_file() {
        return Err(Error::Storage(format!(
            "no database at {}",
            source.display()
        )));
    }
    if dest.exists() {
        return Err(Error::Storage(format!(
            "{} already exists; a backup never overwrites a file",
            dest.display()
        )));
    }
    let conn = open_read_only(source)?;
    let version = schema::check_not_newer(&conn)?;
    if version == 0 {
        return Err(Error::Storage(format!(
            "{} is not a Tasklane database",
            source.display()
        )));
    }
    let target = dest
        .to_str()
        .ok_or_else(|| Error::Storage(format!("{} is not a UTF-8 path", dest.display())))?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(sql_err)?;
    Ok(())
}

/// Schema version, row counts and size of the database at `path`, after an integrity check.
pub fn summarize(path: &Path) -> Result<DatabaseSummary> {
    let conn = open_read_only(path)?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sql_err)?;
    if check != "ok" {
        return Err(Error::Storage(format!(
            "{} fails its integrity check: {check}",
            path.display()
        )));
    }
    let count = |table: &str| -> Result<i64> {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .map_err(sql_err)
    };
    Ok(DatabaseSummary {
        schema_version: conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql_err)?,
        tasks: count("tasks")?,
        runs: count("task_runs")?,
        events: count("task_events")?,
        bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
    })
}
