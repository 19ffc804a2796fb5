//! Classifies SQLite failures into Tasklane's errors: conditions that go away on their own become
//! `Unavailable` (HTTP 503, the client retries); everything else is `Storage` (HTTP 500).

use rusqlite::ErrorCode;
use tasklane_core::Error;

pub(crate) fn sql_err(err: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(ffi, _) = &err {
        if is_transient(ffi.code) {
            return Error::Unavailable(err.to_string());
        }
    }
    Error::Storage(err.to_string())
}

fn is_transient(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory
            | ErrorCode::CannotOpen
    )
}

pub(crate) fn json_err(what: &str, err: serde_json::Error) -> Error {
    Error::Storage(format!("stored {what} is not valid JSON: {err}"))
}
