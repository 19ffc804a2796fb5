//! One PostgreSQL connection with its prepared statements, and the classification of its errors.
//!
//! Every statement is prepared once per connection and kept: a query by text alone would cost a
//! Parse/Describe round trip before every execution.

use std::collections::HashMap;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Row, Statement};
use tasklane_core::{Error, Result};

use super::PgOptions;

/// Statements kept prepared per connection. `list_tasks` and the observe reads build one
/// statement per filter shape, so this is well above the number of fixed statements.
const STATEMENT_CACHE: usize = 512;

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    pub(crate) fn connect(opts: &PgOptions) -> Result<Conn> {
        let client = super::tls::connect(opts, |config| {
            config.connect_timeout(opts.connect_timeout);
            config.application_name("tasklane");
            if let Some(timeout) = opts.statement_timeout.filter(|t| !t.is_zero()) {
                config.options(&format!("-c statement_timeout={}", timeout.as_millis()));
            }
        })?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
        })
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(stmt) = self.statements.get(sql) {
            return Ok(stmt.clone());
        }
        let stmt = self.client.prepare(sql).map_err(pg_err)?;
        if self.statements.len() >= STATEMENT_CACHE {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), stmt.clone());
        Ok(stmt)
    }

    pub(crate) fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
        let stmt = self.statement(sql)?;
        self.client.query(&stmt, params).map_err(pg_err)
    }

    pub(crate) fn query_opt(&mut self, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
        let stmt = self.statement(sql)?;
        self.client.query_opt(&stmt, params).map_err(pg_err)
    }

    pub(crate) fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row> {
        let stmt = self.statement(sql)?;
        self.client.query_one(&stmt, params).map_err(pg_err)
    }

    /// Returns the number of rows changed.
    pub(crate) fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64> {
        let stmt = self.statement(sql)?;
        self.client.execute(&stmt, params).map_err(pg_err)
    }

    /// Runs statements without parameters through the simple protocol (transaction control,
    /// migrations).
    pub(crate) fn batch(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).map_err(pg_err)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(crate) fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// How long a node waits before it tries to reach the database again after losing it.
pub(crate) const RECONNECT_PAUSE: Duration = Duration::from_millis(250);

/// Conditions that pass on their own (a lost or refused connection, a server restarting, a
/// statement timeout, a serialization failure) become `Unavailable` (HTTP 503 with
/// `Retry-After`); everything else is `Storage` (HTTP 500).
pub(crate) fn pg_err(err: postgres::Error) -> Error {
    // Request bodies with U+0000 are refused before they get here; a query or path parameter
    // with one reaches PostgreSQL, which cannot hold it in text.
    if err.code() == Some(&SqlState::CHARACTER_NOT_IN_REPERTOIRE) {
        return Error::validation("text must not contain the NUL character (U+0000)");
    }
    let transient = match err.code() {
        None => true, // I/O, a closed connection, a timeout: no SQLSTATE at all
        Some(code) => is_transient(code),
    };
    // A database error's Display is only "db error"; its message says what happened.
    let msg = match err.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => redact(&err.to_string()),
    };
    if transient {
        Error::Unavailable(format!("database unavailable: {msg}"))
    } else {
        Error::Storage(msg)
    }
}

fn is_transient(code: &SqlState) -> bool {
    let class = &code.code()[..2];
    // 08: connection exception; 53: insufficient resources; 57: operator intervention (admin
    // shutdown, statement timeout, cannot connect now); 40: serialization failure, deadlock.
    matches!(class, "08" | "53" | "57" | "40") || *code == SqlState::LOCK_NOT_AVAILABLE
}

/// Error texts may quote the connection string; a password in it must not reach a log or a
/// response.
pub(crate) fn redact(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for word in msg.split_inclusive(char::is_whitespace) {
        match word.find("://").zip(word.find('@')) {
            Some((scheme, at)) if scheme < at => {
                out.push_str(&word[..scheme + 3]);
                out.push_str("***");
                out.push_str(&word[at..]);
            }
            _ => out.push_str(word),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact("cannot reach postgres://me:secret@db:5432/tl now"),
            "cannot reach postgres://***@db:5432/tl now"
        );
        assert_eq!(redact("no url here"), "no url here");
    }
}
