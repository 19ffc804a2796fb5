//! TLS to PostgreSQL, with libpq's `sslmode` meanings: `disable` connects in the clear; `prefer`
//! (the default) uses TLS when the server offers it and `require` insists on it, both without
//! checking the certificate (as libpq does); `verify-ca` also checks that a trusted CA signed it,
//! and `verify-full` that it names the host too. Trusted CAs are the system's, plus
//! `sslrootcert=<file>` from the URL or [`PgOptions::ca_file`].

use std::path::PathBuf;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tasklane_core::{Error, Result};
use tokio::runtime::Runtime;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

use super::conn::{pg_err, redact, Messages};
use super::PgOptions;

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    Nothing,
    Ca,
    Full,
}

/// The URL's TLS settings, and the URL the client library understands (which knows neither
/// `verify-ca`/`verify-full` nor `sslrootcert`).
struct TlsSettings {
    url: String,
    verify: Verify,
    root_cert: Option<PathBuf>,
}

fn settings(url: &str) -> Result<TlsSettings> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut verify = Verify::Nothing;
    let mut root_cert = None;
    let mut kept = vec![];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (key, value) {
            ("sslmode", "verify-ca") => {
                verify = Verify::Ca;
                kept.push("sslmode=require".to_string());
            }
            ("sslmode", "verify-full") => {
                verify = Verify::Full;
                kept.push("sslmode=require".to_string());
            }
            ("sslmode", "disable" | "prefer" | "require") => kept.push(pair.to_string()),
            ("sslmode", other) => {
                return Err(Error::Storage(format!(
                    "sslmode={other} is not supported: use disable, prefer, require, verify-ca or verify-full"
                )))
            }
            ("sslrootcert", file) => root_cert = Some(PathBuf::from(file)),
            _ => kept.push(pair.to_string()),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(TlsSettings {
        url,
        verify,
        root_cert,
    })
}

/// Connects as `opts` says; `configure` adjusts the parsed configuration (timeouts, options).
/// The connection is driven by `runtime` (current-thread), which only runs while its owner
/// blocks on it.
pub(crate) fn connect(
    opts: &PgOptions,
    configure: impl FnOnce(&mut Config),
) -> Result<(Runtime, Client, Box<dyn Messages>)> {
    let tls = settings(&opts.url)?;
    let mut config: Config = tls.url.parse().map_err(|e: tokio_postgres::Error| {
        Error::Storage(format!(
            "invalid PostgreSQL URL: {}",
            redact(&e.to_string())
        ))
    })?;
    configure(&mut config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Storage(format!("cannot start a database runtime: {e}")))?;
    if config.get_ssl_mode() == SslMode::Disable {
        let (client, connection) = runtime.block_on(config.connect(NoTls)).map_err(pg_err)?;
        return Ok((runtime, client, Box::new(connection)));
    }
    let tls_err = |e: openssl::error::ErrorStack| Error::Storage(format!("TLS setup failed: {e}"));
    let mut builder = SslConnector::builder(SslMethod::tls()).map_err(tls_err)?;
    for ca in [&tls.root_cert, &opts.ca_file].into_iter().flatten() {
        builder
            .set_ca_file(ca)
            .map_err(|e| Error::Storage(format!("cannot load CA file {}: {e}", ca.display())))?;
    }
    if tls.verify == Verify::Nothing {
        builder.set_verify(SslVerifyMode::NONE);
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    if tls.verify != Verify::Full {
        connector.set_callback(|ctx, _| {
            ctx.set_verify_hostname(false);
            Ok(())
        });
    }
    let (client, connection) = runtime
        .block_on(config.connect(connector))
        .map_err(pg_err)?;
    Ok((runtime, client, Box::new(connection)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmodes_follow_libpq() {
        let s = settings("postgres://h/db?sslmode=verify-full&sslrootcert=/ca.pem&x=1").unwrap();
        assert_eq!(s.verify, Verify::Full);
        assert_eq!(s.root_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(s.url, "postgres://h/db?sslmode=require&x=1");
        let s = settings("postgres://h/db?sslmode=verify-ca").unwrap();
        assert_eq!(s.verify, Verify::Ca);
        let s = settings("postgres://h/db").unwrap();
        assert_eq!(
            (s.verify, s.url.as_str()),
            (Verify::Nothing, "postgres://h/db")
        );
        assert!(settings("postgres://h/db?sslmode=allow").is_err());
    }
}
