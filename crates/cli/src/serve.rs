//! `tasklane serve`: open the database, bind, serve until SIGINT/SIGTERM, drain, exit 0.

use std::net::SocketAddr;

use clap::Args;
use tasklane_server::AppState;
use tasklane_store::{SqliteStore, StoreOptions};
use tokio::net::TcpListener;

use crate::database::{self, DatabaseUrl};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "TASKLANE_LISTEN", default_value = "127.0.0.1:7480")]
    listen: String,
    /// Database: sqlite://<path> (or a bare path) or postgres://...
    #[arg(
        long,
        env = "TASKLANE_DATABASE_URL",
        default_value = "sqlite://./tasklane-data/tasklane.db"
    )]
    database: String,
    /// Run on a manual clock moved by POST /api/_test/clock/advance. For tests only.
    #[arg(long, env = "TASKLANE_TEST_CLOCK", hide = true)]
    test_clock: bool,
}

pub fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = args.listen.parse().map_err(|e| {
        format!(
            "--listen {:?} is not an address like 127.0.0.1:7480: {e}",
            args.listen
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "refusing to listen on non-loopback address {addr}: the API has no authentication in this mode; listen on 127.0.0.1 or [::1]"
        )
        .into());
    }
    let path = match database::parse(&args.database)? {
        DatabaseUrl::Sqlite(path) => path,
        DatabaseUrl::Postgres(_) => {
            return Err("the PostgreSQL backend is not available in this version of tasklane; use sqlite://<path>".into())
        }
    };
    let store = SqliteStore::open(&path, StoreOptions::default())?;
    let state = AppState::new(store, args.test_clock);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tracing::info!(%local, database = %path.display(), "tasklane serving");
        println!("tasklane listening on http://{local}");
        tasklane_server::serve(listener, state, shutdown_signal()).await?;
        tracing::info!("tasklane stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
