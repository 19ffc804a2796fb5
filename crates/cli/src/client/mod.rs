//! `tasklane task|run|agent|dashboard|inbox|triage`: a client for every operation of a running
//! server. `http` talks to the server and maps outcomes to exit codes, `output` shows answers,
//! and each resource has its own module.

mod agent;
mod body;
pub mod http;
mod observe;
mod output;
mod runs;
mod tasks;
mod watch;

use std::future::Future;
use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use agent::AgentArgs;
use http::{Client, Failure, Outcome};
pub use observe::{DashboardArgs, InboxArgs, TriageArgs};
pub use output::Format;
use output::Printer;
pub use runs::RunArgs;
pub use tasks::TaskArgs;

/// Shown by `tasklane --help` and the help of every client command.
pub const EXIT_CODES: &str = "\
Exit codes of the client commands:
  0  success
  1  the server answered with an error (its message and code are printed on stderr)
  2  usage error
  3  cannot connect to the server
  4  `agent next`: no work to claim";

/// Where the server is and who is asking; accepted anywhere after the command name.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Connection")]
pub struct Connection {
    /// The server's base URL.
    #[arg(
        long,
        global = true,
        env = "TASKLANE_URL",
        default_value = "http://127.0.0.1:7480"
    )]
    pub url: String,
    /// API token (servers started with `--auth token`), sent as a bearer token.
    #[arg(long, global = true, env = "TASKLANE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Agent session id, sent as `X-AGH-Session-ID` by the agent commands.
    #[arg(long, global = true, env = "TASKLANE_SESSION_ID")]
    pub session: Option<String>,
    /// Output: `human` (tables) or `json` (the API's body, unchanged).
    #[arg(short = 'o', long, global = true, value_enum, default_value = "human")]
    pub output: Format,
}

/// The client commands, as `main` dispatches them.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Create, inspect, change and follow tasks.
    Task(TaskArgs),
    /// Act on one run by id (operator run paths).
    Run(RunArgs),
    /// Pull work as an agent: claim, heartbeat, finish.
    Agent(AgentArgs),
    /// Totals, queue, health and active runs.
    Dashboard(DashboardArgs),
    /// The caller's lanes: my work, approvals, failed runs, blocked, archived.
    Inbox(InboxArgs),
    /// Mark a task read, dismissed or archived in the caller's inbox.
    Triage(TriageArgs),
}

pub fn run(command: ClientCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Failure::Other(format!("starting the runtime failed: {e}"))),
    };
    let outcome = runtime.block_on(async move {
        match command {
            ClientCommand::Task(args) => {
                with(&args.conn, false, |c, p| tasks::run(c, p, args.command)).await
            }
            ClientCommand::Run(args) => {
                with(&args.conn, false, |c, p| runs::run(c, p, args.command)).await
            }
            ClientCommand::Agent(args) => {
                with(&args.conn, true, |c, p| agent::run(c, p, args.command)).await
            }
            ClientCommand::Dashboard(args) => {
                with(&args.conn.clone(), false, |c, p| {
                    observe::dashboard(c, p, args)
                })
                .await
            }
            ClientCommand::Inbox(args) => {
                with(&args.conn.clone(), false, |c, p| observe::inbox(c, p, args)).await
            }
            ClientCommand::Triage(args) => {
                with(&args.conn, false, |c, p| {
                    observe::triage(c, p, args.command)
                })
                .await
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}

async fn with<F, Fut>(conn: &Connection, agent: bool, body: F) -> Outcome
where
    F: FnOnce(Client, Printer) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let client = Client::new(conn, agent)?;
    body(client, Printer::new(conn.output)).await
}

fn fail(failure: &Failure) -> ExitCode {
    match failure {
        Failure::Server { .. } => eprintln!("tasklane: error: {failure}"),
        _ => eprintln!("tasklane: {failure}"),
    }
    ExitCode::from(failure.exit_code())
}
