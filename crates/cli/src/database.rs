//! `--database` URLs: `sqlite://<path>` or a bare path; PostgreSQL URLs are recognised.

use std::path::PathBuf;

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

/// The SQLite file of `--database`, or why it cannot be used.
pub fn sqlite_path(url: &str) -> Result<PathBuf, Box<dyn std::error::Error>> {
    match parse(url)? {
        DatabaseUrl::Sqlite(path) => Ok(path),
        DatabaseUrl::Postgres(_) => Err(
            "the PostgreSQL backend is not available in this version of tasklane; use sqlite://<path>"
                .into(),
        ),
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
        assert!(parse("").is_err());
    }
}
