//! `--database` URLs (`sqlite://<path>`, a bare path, or `postgres://…`) and opening the store
//! they name.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tasklane_store::{PgOptions, PgStore, SqliteStore, Store, StoreOptions};

/// How to reach a PostgreSQL database (ignored for SQLite).
#[derive(Args, Clone, Debug)]
pub struct PostgresArgs {
    /// PostgreSQL: connections this server holds for reads, besides one for its writer and one
    /// for notifications from the other servers.
    #[arg(long, env = "TASKLANE_DATABASE_POOL_SIZE", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,
    /// PostgreSQL: seconds to wait for a connection to be established.
    #[arg(long, env = "TASKLANE_DATABASE_CONNECT_TIMEOUT", default_value = "5",
          value_parser = crate::serve::seconds)]
    pub database_connect_timeout: Duration,
    /// PostgreSQL: seconds a statement may run before it is canceled (the request then gets 503).
    #[arg(long, env = "TASKLANE_DATABASE_STATEMENT_TIMEOUT", default_value = "30",
          value_parser = crate::serve::seconds)]
    pub database_statement_timeout: Duration,
    /// PostgreSQL: microseconds the writer keeps looking for the database's next answer before
    /// it sleeps. Answers to the statements it sends together arrive microseconds apart, and
    /// each sleep costs a context switch; 0 saves that CPU at the cost of write throughput.
    #[arg(long, env = "TASKLANE_DATABASE_WRITER_SPIN_US", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub database_writer_spin_us: u32,
    /// PostgreSQL: a CA certificate (PEM) to trust for TLS besides the system's (sslmode=require).
    #[arg(long, env = "TASKLANE_DATABASE_CA_FILE")]
    pub database_ca_file: Option<PathBuf>,
}

/// Opens the store `url` names. `serve`: this process will serve it (SQLite then holds the
/// one-server lock on its file).
pub fn open(
    url: &str,
    pg: &PostgresArgs,
    serve: bool,
) -> Result<(Store, String), Box<dyn std::error::Error>> {
    match parse(url)? {
        DatabaseUrl::Sqlite(path) => {
            let store = SqliteStore::open(
                &path,
                StoreOptions {
                    serve_lock: serve,
                    ..StoreOptions::default()
                },
            )?;
            Ok((store.into(), path.display().to_string()))
        }
        DatabaseUrl::Postgres(url) => {
            let described = describe_postgres(&url);
            let store = PgStore::open(PgOptions {
                pool_size: pg.database_pool_size as usize,
                connect_timeout: pg.database_connect_timeout,
                statement_timeout: Some(pg.database_statement_timeout),
                ca_file: pg.database_ca_file.clone(),
                writer_spin: Duration::from_micros(pg.database_writer_spin_us.into()),
                ..PgOptions::new(url)
            })
            .map_err(|e| format!("cannot open {described}: {e}"))?;
            Ok((store.into(), described))
        }
    }
}

/// The URL without its user and password, for logs and messages.
fn describe_postgres(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let rest = rest.split_once('?').map_or(rest, |(base, _)| base);
            format!("{scheme}://{rest}")
        }
        None => "postgres".to_string(),
    }
}

#[derive(Debug, PartialEq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("--database is empty")]
    Empty,
    #[error("unsupported database URL scheme {0:?}: use sqlite://<path> or postgres://...")]
    Scheme(String),
}

/// The SQLite file of `--database`, or why it cannot be used (`what`: the command that needs a
/// file).
pub fn sqlite_path(url: &str, what: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    match parse(url)? {
        DatabaseUrl::Sqlite(path) => Ok(path),
        DatabaseUrl::Postgres(_) => Err(format!(
            "{what} works on SQLite files only; back up PostgreSQL with its own tools (pg_dump, base backups)"
        )
        .into()),
    }
}

pub fn parse(url: &str) -> Result<DatabaseUrl, DatabaseUrlError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(DatabaseUrlError::Empty);
    }
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err(DatabaseUrlError::Empty);
        }
        return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(DatabaseUrl::Postgres(url.to_string()));
    }
    match url.split_once("://") {
        Some((scheme, _)) => Err(DatabaseUrlError::Scheme(scheme.to_string())),
        None => Ok(DatabaseUrl::Sqlite(PathBuf::from(url))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sqlite_forms_and_postgres() {
        assert_eq!(
            parse("sqlite://./d/t.db").unwrap(),
            DatabaseUrl::Sqlite("./d/t.db".into())
        );
        assert_eq!(
            parse("sqlite:///abs/t.db").unwrap(),
            DatabaseUrl::Sqlite("/abs/t.db".into())
        );
        assert_eq!(parse("t.db").unwrap(), DatabaseUrl::Sqlite("t.db".into()));
        assert!(matches!(
            parse("postgres://u@h/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert!(parse("mysql://x").is_err());
        assert_eq!(
            describe_postgres("postgres://me:secret@db.example:5432/tl?sslmode=require"),
            "postgres://db.example:5432/tl"
        );
        assert!(parse("").is_err());
    }
}
