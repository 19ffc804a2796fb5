//! `tasklane agent …`: the agent protocol, `/api/agent/tasks/…`. The caller is an agent session
//! (`--session` / `TASKLANE_SESSION_ID`, or an agent token). Lease operations are fenced by the
//! server on the run, the session and the lease it holds, so they take only the run id.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::body::Body;
use super::http::{Client, Failure, Outcome};
use super::output::{ago, scalar, text, Printer};
use super::runs::result_body;
use super::Connection;

#[derive(Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct AgentArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Subcommand)]
pub enum AgentCommand {
    /// Claim the best queued run this session may take. Exit code 4 when there is none.
    Next {
        /// Wait for work to arrive instead of answering at once.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (server default 30, at most 300).
        #[arg(long, value_name = "SECONDS", requires = "wait")]
        wait_seconds: Option<i64>,
        /// A capability this agent offers (repeatable); only runs it satisfies are claimed.
        #[arg(long = "capability", value_name = "CAPABILITY")]
        capabilities: Vec<String>,
        /// Length of the lease (server default applies when absent).
        #[arg(long, value_name = "SECONDS")]
        lease_seconds: Option<i64>,
        /// Only tasks of at least this priority (≤10 low, ≤20 medium, ≤30 high, ≤40 urgent).
        #[arg(long)]
        priority_min: Option<i64>,
        /// Only tasks of this workspace.
        #[arg(long)]
        workspace: Option<String>,
        /// Repeating a request with the same key does not act twice.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Renew the lease on a run.
    Heartbeat {
        run: String,
        #[arg(long, value_name = "SECONDS")]
        lease_seconds: Option<i64>,
    },
    /// Finish the leased run successfully.
    Complete {
        run: String,
        /// The run's result, a JSON document.
        #[arg(long, value_name = "JSON")]
        result: Option<String>,
    },
    /// Finish the leased run as failed.
    Fail {
        run: String,
        #[arg(long)]
        error: String,
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
    },
    /// Give the run back to the queue.
    Release {
        run: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub async fn run(client: Client, out: Printer, command: AgentCommand) -> Outcome {
    let lease_path = |run: &str, action: &str| -> Vec<String> {
        ["agent", "tasks", run, action]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let (path, body) = match command {
        AgentCommand::Next {
            wait,
            wait_seconds,
            capabilities,
            lease_seconds,
            priority_min,
            workspace,
            idempotency_key,
        } => {
            let body = Body::new()
                .flag("wait", wait)
                .opt("wait_seconds", wait_seconds)
                .list("required_capabilities", &capabilities)
                .opt("lease_seconds", lease_seconds)
                .opt("priority_min", priority_min)
                .opt("workspace_id", workspace)
                .opt("idempotency_key", idempotency_key);
            let answer = client
                .post(&["agent", "tasks", "claim-next"], Some(body.value()))
                .await?;
            if answer.status == reqwest::StatusCode::NO_CONTENT {
                return Err(Failure::NoWork);
            }
            out.emit(&answer, claim);
            return Ok(());
        }
        AgentCommand::Heartbeat { run, lease_seconds } => (
            lease_path(&run, "heartbeat"),
            Body::new().opt("lease_seconds", lease_seconds).build(),
        ),
        AgentCommand::Complete { run, result } => (
            lease_path(&run, "complete"),
            result_body(result.as_deref())?,
        ),
        AgentCommand::Fail {
            run,
            error,
            metadata,
        } => (
            lease_path(&run, "fail"),
            Body::new()
                .set("error", error)
                .json("metadata", "--metadata", metadata.as_deref())?
                .build(),
        ),
        AgentCommand::Release { run, reason } => (
            lease_path(&run, "release"),
            Body::new().opt("reason", reason).build(),
        ),
    };
    let segments: Vec<&str> = path.iter().map(String::as_str).collect();
    let answer = client.post(&segments, body).await?;
    out.emit(&answer, |out, body| lease(out, &body["lease"]));
    Ok(())
}

fn claim(out: &Printer, body: &Value) {
    let claim = &body["claim"];
    out.fields(&[
        ("run", scalar(claim, &["run", "id"])),
        ("attempt", scalar(claim, &["run", "attempt"])),
        ("task", scalar(claim, &["task", "id"])),
        ("title", scalar(claim, &["task", "title"])),
        ("priority", scalar(claim, &["task", "priority"])),
        ("session", scalar(claim, &["lease", "session_id"])),
        ("lease until", until(&claim["lease"])),
        ("claim hash", scalar(claim, &["lease", "claim_token_hash"])),
    ]);
}

fn lease(out: &Printer, lease: &Value) {
    out.fields(&[
        ("run", scalar(lease, &["run_id"])),
        ("task", scalar(lease, &["task_id"])),
        ("status", out.paint(text(lease, &["status"]))),
        ("session", scalar(lease, &["session_id"])),
        ("lease until", until(lease)),
    ]);
}

fn until(lease: &Value) -> String {
    match text(lease, &["lease_until"]) {
        "" => String::new(),
        at => format!("{} ({at})", ago(at)),
    }
}
