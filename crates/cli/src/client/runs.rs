//! `tasklane run …`: the operator run paths, `/api/task-runs/{id}/…`.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::body::{parse_json, Body};
use super::http::{Client, Outcome};
use super::output::{actor, ago, right, scalar, text, Printer};
use super::Connection;

#[derive(Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct RunArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: RunCommand,
}

#[derive(Subcommand)]
pub enum RunCommand {
    /// A run with its task.
    Show { id: String },
    /// queued → claimed.
    Claim {
        id: String,
        /// Repeating a request with the same key does not act twice.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// claimed → starting → running.
    Start {
        id: String,
        /// Repeating a request with the same key does not act twice.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Record the agent session working on a run.
    Attach { id: String, session_id: String },
    /// Finish a run successfully.
    Complete {
        id: String,
        /// The run's result, a JSON document.
        #[arg(long, value_name = "JSON")]
        result: Option<String>,
    },
    /// Finish a run as failed.
    Fail {
        id: String,
        #[arg(long)]
        error: String,
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
    },
    /// Cancel a run.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
    },
}

pub async fn run(client: Client, out: Printer, command: RunCommand) -> Outcome {
    let answer = match &command {
        RunCommand::Show { id } => client.get(&["task-runs", id], &[]).await?,
        RunCommand::Claim {
            id,
            idempotency_key,
        } => {
            let body = Body::new().opt("idempotency_key", idempotency_key.as_deref());
            client
                .post(&["task-runs", id, "claim"], body.build())
                .await?
        }
        RunCommand::Start {
            id,
            idempotency_key,
        } => {
            let body = Body::new().opt("idempotency_key", idempotency_key.as_deref());
            client
                .post(&["task-runs", id, "start"], body.build())
                .await?
        }
        RunCommand::Attach { id, session_id } => {
            let body = Body::new().set("session_id", session_id.as_str());
            client
                .post(&["task-runs", id, "attach-session"], body.build())
                .await?
        }
        RunCommand::Complete { id, result } => {
            client
                .post(
                    &["task-runs", id, "complete"],
                    result_body(result.as_deref())?,
                )
                .await?
        }
        RunCommand::Fail {
            id,
            error,
            metadata,
        } => {
            let body = Body::new().set("error", error.as_str()).json(
                "metadata",
                "--metadata",
                metadata.as_deref(),
            )?;
            client
                .post(&["task-runs", id, "fail"], body.build())
                .await?
        }
        RunCommand::Cancel {
            id,
            reason,
            metadata,
        } => {
            let body = Body::new().opt("reason", reason.as_deref()).json(
                "metadata",
                "--metadata",
                metadata.as_deref(),
            )?;
            client
                .post(&["task-runs", id, "cancel"], body.build())
                .await?
        }
    };
    out.emit(&answer, run_answer);
    Ok(())
}

/// `{"run":…}` of a transition, or the detail `{"run":{"run","task","session","summary"}}`.
fn run_answer(out: &Printer, body: &Value) {
    let outer = &body["run"];
    let (run, task) = match outer.get("run") {
        Some(run) => (run, outer.get("task")),
        None => (outer, None),
    };
    run_fields(out, run);
    if let Some(task) = task.filter(|t| t.is_object()) {
        out.line("");
        out.fields(&[
            ("task", scalar(task, &["id"])),
            ("title", scalar(task, &["title"])),
            ("task status", out.paint(text(task, &["status"]))),
        ]);
    }
}

pub fn run_fields(out: &Printer, run: &Value) {
    let when = |key: &str| match text(run, &[key]) {
        "" => String::new(),
        at => format!("{} ({at})", ago(at)),
    };
    let result = match run.get("result") {
        Some(v) if !v.is_null() => v.to_string(),
        _ => String::new(),
    };
    out.fields(&[
        ("id", scalar(run, &["id"])),
        ("task", scalar(run, &["task_id"])),
        ("status", out.paint(text(run, &["status"]))),
        ("attempt", scalar(run, &["attempt"])),
        ("session", scalar(run, &["session_id"])),
        ("claimed by", actor(run, "claimed_by")),
        ("queued", when("queued_at")),
        ("claimed", when("claimed_at")),
        ("started", when("started_at")),
        ("ended", when("ended_at")),
        ("lease until", when("lease_until")),
        ("error", scalar(run, &["error"])),
        ("result", result),
    ]);
}

pub fn runs_table(out: &Printer, runs: &Value) {
    let mut table = out.table(&["run", "attempt", "status", "session", "queued", "ended"]);
    for run in runs.as_array().into_iter().flatten() {
        table.add_row(vec![
            comfy_table::Cell::new(text(run, &["id"])),
            right(scalar(run, &["attempt"])),
            out.status(text(run, &["status"])),
            comfy_table::Cell::new(text(run, &["session_id"])),
            comfy_table::Cell::new(ago(text(run, &["queued_at"]))),
            comfy_table::Cell::new(ago(text(run, &["ended_at"]))),
        ]);
    }
    if table.row_count() == 0 {
        out.line("no runs");
    } else {
        out.print_table(&table);
    }
}

/// The body of a completion: `{"result": …}` when `--result` was given.
pub fn result_body(result: Option<&str>) -> Outcome<Option<Value>> {
    match result {
        Some(raw) => Ok(Body::new()
            .set("result", parse_json("--result", raw)?)
            .build()),
        None => Ok(None),
    }
}
