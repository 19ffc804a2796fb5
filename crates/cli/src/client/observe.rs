//! `tasklane dashboard`, `tasklane inbox`, `tasklane triage …`: `/api/observe/tasks/…` and the
//! per-caller triage marks.

use clap::{Args, Subcommand};
use comfy_table::Cell;
use serde_json::Value;

use super::body::Query;
use super::http::{Client, Outcome};
use super::output::{actor, ago, millis, right, scalar, text, Printer};
use super::Connection;

/// Filters shared by the dashboard and the inbox.
#[derive(Args, Clone)]
pub struct ObserveFilter {
    #[arg(long)]
    scope: Option<String>,
    #[arg(long)]
    workspace: Option<String>,
    #[arg(long)]
    owner_kind: Option<String>,
    #[arg(long)]
    owner_ref: Option<String>,
}

impl ObserveFilter {
    fn query(&self) -> Query {
        Query::new()
            .opt("scope", self.scope.as_deref())
            .opt("workspace", self.workspace.as_deref())
            .opt("owner_kind", self.owner_kind.as_deref())
            .opt("owner_ref", self.owner_ref.as_deref())
    }
}

#[derive(Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(flatten)]
    filter: ObserveFilter,
    #[arg(long = "channel")]
    network_channel: Option<String>,
    /// Only tasks created through this origin (cli, web, http, automation, …).
    #[arg(long)]
    origin_kind: Option<String>,
}

#[derive(Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct InboxArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(flatten)]
    filter: ObserveFilter,
    /// my_work, approvals, failed_runs, blocked or archived.
    #[arg(long)]
    lane: Option<String>,
    /// Only unread items.
    #[arg(long)]
    unread: bool,
    #[arg(long)]
    query: Option<String>,
    /// Items per lane.
    #[arg(long)]
    limit: Option<i64>,
}

#[derive(Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct TriageArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: TriageCommand,
}

#[derive(Subcommand)]
pub enum TriageCommand {
    /// Mark a task read.
    Read { id: String },
    /// Dismiss a task from the caller's lanes.
    Dismiss { id: String },
    /// Archive a task.
    Archive { id: String },
}

pub async fn dashboard(client: Client, out: Printer, args: DashboardArgs) -> Outcome {
    let query = args
        .filter
        .query()
        .opt("network_channel", args.network_channel.as_deref())
        .opt("origin_kind", args.origin_kind.as_deref());
    let answer = client
        .get(&["observe", "tasks", "dashboard"], &query.pairs())
        .await?;
    out.emit(&answer, show_dashboard);
    Ok(())
}

pub async fn inbox(client: Client, out: Printer, args: InboxArgs) -> Outcome {
    let query = args
        .filter
        .query()
        .opt("lane", args.lane.as_deref())
        .flag("unread", args.unread)
        .opt("query", args.query.as_deref())
        .opt("limit", args.limit);
    let answer = client
        .get(&["observe", "tasks", "inbox"], &query.pairs())
        .await?;
    out.emit(&answer, show_inbox);
    Ok(())
}

pub async fn triage(client: Client, out: Printer, command: TriageCommand) -> Outcome {
    let (id, mark) = match &command {
        TriageCommand::Read { id } => (id, "read"),
        TriageCommand::Dismiss { id } => (id, "dismiss"),
        TriageCommand::Archive { id } => (id, "archive"),
    };
    let answer = client.post(&["tasks", id, "triage", mark], None).await?;
    out.emit(&answer, |out, body| {
        let triage = &body["triage"];
        let yes = |key: &str| match triage[key].as_bool() {
            Some(true) => "yes".to_string(),
            Some(false) => "no".to_string(),
            None => String::new(),
        };
        out.fields(&[
            ("task", scalar(triage, &["task_id"])),
            ("for", actor(triage, "actor")),
            ("read", yes("read")),
            ("dismissed", yes("dismissed")),
            ("archived", yes("archived")),
        ]);
    });
    Ok(())
}

fn show_dashboard(out: &Printer, body: &Value) {
    let d = &body["dashboard"];
    let totals = &d["totals"];
    let health = &d["health"];
    let queue = &d["queue"];
    let freshness = &d["freshness"];
    out.fields(&[
        ("health", out.paint(text(health, &["status"]))),
        ("tasks", scalar(totals, &["tasks_total"])),
        ("runs", scalar(totals, &["runs_total"])),
        ("queue", queue_line(queue)),
        (
            "problems",
            format!(
                "{} stuck, {} orphaned",
                scalar(health, &["stuck_runs"]),
                scalar(health, &["active_orphan_runs"])
            ),
        ),
        (
            "freshness",
            format!(
                "{}, last activity {}",
                text(freshness, &["status"]),
                ago(text(freshness, &["latest_activity_at"]))
            ),
        ),
    ]);
    if let Some(breakdown) = d["status_breakdown"].as_array().filter(|b| !b.is_empty()) {
        out.line("");
        let mut table = out.table(&["status", "tasks", "share"]);
        for row in breakdown {
            table.add_row(vec![
                out.status(text(row, &["status"])),
                right(scalar(row, &["count"])),
                right(format!("{}%", scalar(row, &["share_percent"]))),
            ]);
        }
        out.print_table(&table);
    }
    let active = &d["active_runs"];
    if let Some(items) = active["items"].as_array().filter(|i| !i.is_empty()) {
        out.line("");
        out.line(&format!("active runs ({})", scalar(active, &["total"])));
        let mut table = out.table(&["run", "status", "task", "title", "session", "age", "health"]);
        for run in items {
            let health = if run["stuck"].as_bool() == Some(true) {
                "stuck"
            } else {
                text(run, &["health_status"])
            };
            table.add_row(vec![
                Cell::new(text(run, &["run_id"])),
                out.status(text(run, &["run_status"])),
                Cell::new(text(run, &["task_id"])),
                Cell::new(text(run, &["task_title"])),
                Cell::new(text(run, &["session_id"])),
                right(millis(&run["age_ms"])),
                out.status(health),
            ]);
        }
        out.print_table(&table);
    }
}

fn queue_line(queue: &Value) -> String {
    match queue["total"].as_i64() {
        Some(0) | None => "empty".to_string(),
        Some(n) => format!(
            "{n} queued, oldest waiting {} ({})",
            millis(&queue["oldest_queue_age_ms"]),
            text(queue, &["backlog_status"])
        ),
    }
}

fn show_inbox(out: &Printer, body: &Value) {
    let inbox = &body["inbox"];
    let mut table = out.table(&["lane", "items", "unread"]);
    for group in inbox["groups"].as_array().into_iter().flatten() {
        table.add_row(vec![
            Cell::new(text(group, &["lane"])),
            right(scalar(group, &["count"])),
            right(scalar(group, &["unread_count"])),
        ]);
    }
    out.print_table(&table);
    let mut items = out.table(&["lane", "task", "status", "title", "why", "activity", "read"]);
    for group in inbox["groups"].as_array().into_iter().flatten() {
        for item in group["items"].as_array().into_iter().flatten() {
            let read = if item["triage"]["read"].as_bool() == Some(true) {
                ""
            } else {
                "new"
            };
            items.add_row(vec![
                Cell::new(text(item, &["lane"])),
                Cell::new(text(item, &["task", "id"])),
                out.status(text(item, &["task", "status"])),
                Cell::new(text(item, &["task", "title"])),
                Cell::new(text(item, &["blocking_reason"])),
                Cell::new(ago(text(item, &["latest_activity_at"]))),
                Cell::new(read),
            ]);
        }
    }
    if items.row_count() > 0 {
        out.line("");
        out.print_table(&items);
    }
}
