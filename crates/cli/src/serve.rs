//! `tasklane serve`: open the database, bind, serve until SIGINT/SIGTERM, drain, exit 0.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use tasklane_server::{
    AppState, AuthMode, BrowserPolicy, ConnectionLimits, HttpSettings, Settings,
};

use tokio::net::TcpListener;

use crate::logging::LogFormat;
use crate::{database, fd_limit};

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthArg {
    Open,
    Token,
}

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
    #[command(flatten)]
    postgres: database::PostgresArgs,
    /// Authentication: open (no credentials; loopback only) or token (Authorization: Bearer).
    #[arg(long, env = "TASKLANE_AUTH", value_enum, default_value = "open")]
    auth: AuthArg,
    /// A run is failed instead of requeued on its this-many-th lease expiry.
    #[arg(long, env = "TASKLANE_MAX_LEASE_EXPIRATIONS", default_value_t = 3,
          value_parser = clap::value_parser!(i64).range(1..))]
    max_lease_expirations: i64,
    /// A web origin (scheme://host[:port]) whose pages may write in open mode, besides the
    /// server's own. Repeatable; the variable takes a comma-separated list.
    #[arg(
        long = "allowed-origin",
        env = "TASKLANE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// A host name requests may be addressed to, besides the listen address and localhost.
    /// Repeatable; the variable takes a comma-separated list. Also enforced in token mode.
    #[arg(
        long = "allowed-host",
        env = "TASKLANE_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// Most connections open at once (lowered to fit the open-file limit); more wait to be accepted.
    #[arg(long, env = "TASKLANE_MAX_CONNECTIONS", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, env = "TASKLANE_HEADER_TIMEOUT", default_value = "10", value_parser = seconds)]
    header_timeout: Duration,
    /// Seconds a kept-alive connection may stay idle between requests.
    #[arg(long, env = "TASKLANE_IDLE_TIMEOUT", default_value = "60", value_parser = seconds)]
    idle_timeout: Duration,
    /// Seconds a client may take to send a request's body.
    #[arg(long, env = "TASKLANE_BODY_TIMEOUT", default_value = "60", value_parser = seconds)]
    body_timeout: Duration,
    /// Serve /metrics on this address, without authentication, instead of on --listen.
    #[arg(long, env = "TASKLANE_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Log format on stderr: text, or json (one object per line).
    #[arg(long, env = "TASKLANE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Run on a manual clock moved by POST /api/_test/clock/advance. For tests only.
    #[arg(long, env = "TASKLANE_TEST_CLOCK", hide = true,
          value_parser = clap::builder::BoolishValueParser::new(),
          action = clap::ArgAction::SetTrue)]
    test_clock: bool,
}

impl ServeArgs {
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }
}

pub fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = args.listen.parse().map_err(|e| {
        format!(
            "--listen {:?} is not an address like 127.0.0.1:7480: {e}",
            args.listen
        )
    })?;
    if !addr.ip().is_loopback() && args.auth == AuthArg::Open {
        return Err(format!(
            "refusing to listen on non-loopback address {addr} in open mode, which has no authentication; start with --auth token (and create tokens with `tasklane token create`)"
        )
        .into());
    }
    let browser = BrowserPolicy::new(
        args.auth == AuthArg::Open,
        addr.ip(),
        &args.allowed_origins,
        &args.allowed_hosts,
    )?;
    let limits = ConnectionLimits {
        max_connections: fd_limit::max_connections(args.max_connections as usize),
        header_timeout: args.header_timeout,
        idle_timeout: args.idle_timeout,
        body_timeout: args.body_timeout,
    };
    let metrics_addr: Option<SocketAddr> = args
        .metrics_listen
        .as_deref()
        .map(|a| {
            a.parse().map_err(|e| {
                format!("--metrics-listen {a:?} is not an address like 127.0.0.1:9480: {e}")
            })
        })
        .transpose()?;
    let (store, database) = database::open(&args.database, &args.postgres, true)?;
    let auth = match args.auth {
        AuthArg::Open => AuthMode::Open,
        AuthArg::Token => AuthMode::Token(Default::default()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let state = runtime.block_on(AppState::new(
        store,
        Settings {
            auth,
            test_clock: args.test_clock,
            max_lease_expirations: args.max_lease_expirations,
        },
    ))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        tracing::info!(%local, %database, "tasklane serving");
        let metrics_listener = match metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        println!("tasklane listening on http://{local}");
        if let Some(listener) = &metrics_listener {
            println!(
                "tasklane metrics on http://{}/metrics",
                listener.local_addr()?
            );
        }
        let http = HttpSettings {
            limits,
            browser,
            metrics_listener,
        };
        tasklane_server::serve(listener, state, http, shutdown_signal()).await?;
        tracing::info!("tasklane stopped");
        Ok(())
    })
}

pub(crate) fn seconds(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0)
        .and_then(|n| Duration::try_from_secs_f64(n).ok())
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
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
