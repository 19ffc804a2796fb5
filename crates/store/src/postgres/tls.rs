//! TLS to PostgreSQL, as the URL's `sslmode` asks: `disable` connects in the clear; `prefer`
//! (the default) and `require` use TLS, verifying the server's certificate against the system's
//! trust store, plus the CA file of [`PgOptions::ca_file`] when one is given.

use openssl::ssl::{SslConnector, SslMethod};
use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use postgres_openssl::MakeTlsConnector;
use tasklane_core::{Error, Result};

use super::conn::pg_err;
use super::PgOptions;

pub(crate) fn connect(config: &Config, opts: &PgOptions) -> Result<Client> {
    if config.get_ssl_mode() == SslMode::Disable {
        return config.connect(NoTls).map_err(pg_err);
    }
    let tls_err = |e: openssl::error::ErrorStack| Error::Storage(format!("TLS setup failed: {e}"));
    let mut builder = SslConnector::builder(SslMethod::tls()).map_err(tls_err)?;
    if let Some(ca) = &opts.ca_file {
        builder
            .set_ca_file(ca)
            .map_err(|e| Error::Storage(format!("cannot load CA file {}: {e}", ca.display())))?;
    }
    config
        .connect(MakeTlsConnector::new(builder.build()))
        .map_err(pg_err)
}
