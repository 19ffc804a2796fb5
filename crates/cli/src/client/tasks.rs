//! `tasklane task …`: `/api/tasks` and everything under it.

use clap::{Args, Subcommand};
use serde_json::Value;

use super::body::{owner, Body, Query};
use super::http::{Client, Outcome};
use super::output::{actor, ago, right, scalar, text, Printer};
use super::runs::{run_fields, runs_table};
use super::{watch, Connection};

#[derive(Args)]
#[command(after_help = super::EXIT_CODES)]
pub struct TaskArgs {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: TaskCommand,
}

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Create a task (with --parent, a child of that task).
    Create(CreateArgs),
    /// List tasks, newest activity first, one page at a time.
    List(ListArgs),
    /// A task with its runs, dependencies, children and newest events.
    Show { id: String },
    /// Change a task's fields (only the flags given are changed).
    Update(UpdateArgs),
    /// Delete a task.
    Delete { id: String },
    /// Publish a draft.
    Publish(ExecuteArgs),
    /// Approve a task under manual approval (enqueues its run unless it is a draft).
    Approve(ExecuteArgs),
    /// Reject a task under manual approval.
    Reject {
        id: String,
        /// Why, recorded in the rejection event (at most 1000 characters).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Start a task: enqueue its first run.
    Start(ExecuteArgs),
    /// Enqueue another run attempt (up to the task's max attempts).
    Retry(ExecuteArgs),
    /// Cancel a task and its whole subtree.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// JSON document recorded with the cancellation.
        #[arg(long, value_name = "JSON")]
        metadata: Option<String>,
    },
    /// List a task's children.
    Children {
        id: String,
        #[command(flatten)]
        page: PageArgs,
    },
    /// A task and all its descendants, in tree order.
    Tree { id: String },
    /// Add or remove a dependency.
    #[command(subcommand)]
    Deps(DepsCommand),
    /// A task's runs, newest first.
    Runs {
        id: String,
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this agent session.
        #[arg(long = "session-id")]
        session_id: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// A task's events, oldest first.
    Timeline {
        id: String,
        /// Only events after this sequence number.
        #[arg(long, value_name = "SEQUENCE")]
        after: Option<i64>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Follow a task and its subtree live, one line per event.
    ///
    /// Runs until interrupted. A dropped connection is resumed after the last event shown, so
    /// no event is skipped or shown twice. With `-o json`, one stream frame per line.
    Watch {
        id: String,
        /// Start after this sequence number (default: replay the task's whole history).
        #[arg(long, value_name = "SEQUENCE")]
        after: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum DepsCommand {
    /// TASK waits for BLOCKER to complete.
    Add { task: String, blocker: String },
    /// Remove the dependency of TASK on BLOCKER.
    Rm { task: String, blocker: String },
}

#[derive(Args)]
pub struct PageArgs {
    /// Rows per page (server default 100, at most 1000).
    #[arg(long)]
    limit: Option<i64>,
    /// Resume after a previous page (its `next_cursor`).
    #[arg(long)]
    cursor: Option<String>,
}

impl PageArgs {
    fn query(&self, query: Query) -> Query {
        query
            .opt("limit", self.limit)
            .opt("cursor", self.cursor.as_deref())
    }
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(long)]
    title: String,
    /// global or workspace (default: workspace when --workspace is given, else global).
    #[arg(long)]
    scope: Option<String>,
    #[arg(long)]
    workspace: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// low, medium, high or urgent.
    #[arg(long)]
    priority: Option<String>,
    /// Create as a draft (publish it later).
    #[arg(long)]
    draft: bool,
    /// Require manual approval before it runs.
    #[arg(long)]
    manual_approval: bool,
    /// Enqueue a run as soon as its dependencies complete.
    #[arg(long)]
    auto_enqueue: bool,
    #[arg(long)]
    max_attempts: Option<i64>,
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    #[arg(long = "channel")]
    network_channel: Option<String>,
    /// KIND:REF, e.g. human:alice.
    #[arg(long)]
    owner: Option<String>,
    /// A capability an agent must offer to claim it (repeatable).
    #[arg(long = "require", value_name = "CAPABILITY")]
    required: Vec<String>,
    /// A capability preferred in an agent (repeatable).
    #[arg(long = "prefer", value_name = "CAPABILITY")]
    preferred: Vec<String>,
    /// Client-chosen task id.
    #[arg(long)]
    id: Option<String>,
    #[arg(long)]
    identifier: Option<String>,
    /// Create it as a child of this task.
    #[arg(long, value_name = "TASK")]
    parent: Option<String>,
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    priority: Option<String>,
    #[arg(long)]
    scope: Option<String>,
    #[arg(long)]
    workspace: Option<String>,
    #[arg(long)]
    include_drafts: bool,
    #[arg(long)]
    approval_state: Option<String>,
    #[arg(long)]
    owner_kind: Option<String>,
    #[arg(long)]
    owner_ref: Option<String>,
    #[arg(long, value_name = "TASK")]
    parent: Option<String>,
    #[arg(long = "channel")]
    network_channel: Option<String>,
    /// Text to search for in titles and descriptions.
    #[arg(long)]
    query: Option<String>,
    #[command(flatten)]
    page: PageArgs,
}

#[derive(Args)]
pub struct UpdateArgs {
    id: String,
    #[arg(long)]
    title: Option<String>,
    #[arg(long)]
    description: Option<String>,
    #[arg(long)]
    priority: Option<String>,
    #[arg(long)]
    max_attempts: Option<i64>,
    #[arg(long, value_name = "BOOL")]
    auto_enqueue: Option<bool>,
    /// none or manual.
    #[arg(long)]
    approval_policy: Option<String>,
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    #[arg(long = "channel")]
    network_channel: Option<String>,
    /// KIND:REF.
    #[arg(long, conflicts_with = "clear_owner")]
    owner: Option<String>,
    #[arg(long)]
    clear_owner: bool,
    #[arg(long = "require", value_name = "CAPABILITY")]
    required: Vec<String>,
    #[arg(long = "prefer", value_name = "CAPABILITY")]
    preferred: Vec<String>,
}

/// Flags of publish, approve, start and retry.
#[derive(Args)]
pub struct ExecuteArgs {
    id: String,
    /// Repeating a request with the same key does not enqueue twice.
    /// Repeating a request with the same key does not act twice.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[arg(long, value_name = "JSON")]
    metadata: Option<String>,
    #[arg(long = "channel")]
    network_channel: Option<String>,
}

impl ExecuteArgs {
    fn body(&self) -> Outcome<Option<Value>> {
        Ok(Body::new()
            .opt("idempotency_key", self.idempotency_key.as_deref())
            .opt("network_channel", self.network_channel.as_deref())
            .json("metadata", "--metadata", self.metadata.as_deref())?
            .build())
    }
}

pub async fn run(client: Client, out: Printer, command: TaskCommand) -> Outcome {
    match command {
        TaskCommand::Create(args) => {
            let scope = args.scope.clone().unwrap_or_else(|| {
                if args.workspace.is_some() {
                    "workspace"
                } else {
                    "global"
                }
                .to_string()
            });
            let mut body = Body::new()
                .set("scope", scope)
                .set("title", args.title.as_str())
                .opt("workspace", args.workspace.as_deref())
                .opt("description", args.description.as_deref())
                .opt("priority", args.priority.as_deref())
                .flag("draft", args.draft)
                .flag("auto_enqueue_on_ready", args.auto_enqueue)
                .opt("max_attempts", args.max_attempts)
                .opt("network_channel", args.network_channel.as_deref())
                .opt("id", args.id.as_deref())
                .opt("identifier", args.identifier.as_deref())
                .list("required_capabilities", &args.required)
                .list("preferred_capabilities", &args.preferred)
                .json("metadata", "--metadata", args.metadata.as_deref())?;
            if args.manual_approval {
                body = body.set("approval_policy", "manual");
            }
            if let Some(raw) = &args.owner {
                body = body.set("owner", owner(raw)?);
            }
            let answer = match &args.parent {
                Some(parent) => {
                    client
                        .post(&["tasks", parent, "children"], body.build())
                        .await?
                }
                None => client.post(&["tasks"], body.build()).await?,
            };
            out.emit(&answer, task_and_run);
        }
        TaskCommand::List(args) => {
            let query = Query::new()
                .opt("status", args.status.as_deref())
                .opt("priority", args.priority.as_deref())
                .opt("scope", args.scope.as_deref())
                .opt("workspace", args.workspace.as_deref())
                .flag("include_drafts", args.include_drafts)
                .opt("approval_state", args.approval_state.as_deref())
                .opt("owner_kind", args.owner_kind.as_deref())
                .opt("owner_ref", args.owner_ref.as_deref())
                .opt("parent_task_id", args.parent.as_deref())
                .opt("network_channel", args.network_channel.as_deref())
                .opt("query", args.query.as_deref());
            let answer = client
                .get(&["tasks"], &args.page.query(query).pairs())
                .await?;
            out.emit(&answer, task_list);
        }
        TaskCommand::Show { id } => {
            let answer = client.get(&["tasks", &id], &[]).await?;
            out.emit(&answer, task_detail);
        }
        TaskCommand::Update(args) => {
            let mut body = Body::new()
                .opt("title", args.title.as_deref())
                .opt("description", args.description.as_deref())
                .opt("priority", args.priority.as_deref())
                .opt("max_attempts", args.max_attempts)
                .opt("auto_enqueue_on_ready", args.auto_enqueue)
                .opt("approval_policy", args.approval_policy.as_deref())
                .opt("network_channel", args.network_channel.as_deref())
                .flag("clear_owner", args.clear_owner)
                .list("required_capabilities", &args.required)
                .list("preferred_capabilities", &args.preferred)
                .json("metadata", "--metadata", args.metadata.as_deref())?;
            if let Some(raw) = &args.owner {
                body = body.set("owner", owner(raw)?);
            }
            let answer = client.patch(&["tasks", &args.id], body.value()).await?;
            out.emit(&answer, task_and_run);
        }
        TaskCommand::Delete { id } => {
            let answer = client.delete(&["tasks", &id]).await?;
            out.emit(&answer, |out, _| out.line(&format!("deleted {id}")));
        }
        TaskCommand::Publish(args) => execute(&client, &out, "publish", &args).await?,
        TaskCommand::Approve(args) => execute(&client, &out, "approve", &args).await?,
        TaskCommand::Start(args) => execute(&client, &out, "start", &args).await?,
        TaskCommand::Retry(args) => execute(&client, &out, "runs", &args).await?,
        TaskCommand::Reject { id, reason } => {
            let body = Body::new().opt("reason", reason).build();
            let answer = client.post(&["tasks", &id, "reject"], body).await?;
            out.emit(&answer, task_and_run);
        }
        TaskCommand::Cancel {
            id,
            reason,
            metadata,
        } => {
            let body = Body::new().opt("reason", reason).json(
                "metadata",
                "--metadata",
                metadata.as_deref(),
            )?;
            let answer = client.post(&["tasks", &id, "cancel"], body.build()).await?;
            out.emit(&answer, task_and_run);
        }
        TaskCommand::Children { id, page } => {
            let query = page.query(Query::new().opt("parent_task_id", Some(id)));
            let answer = client.get(&["tasks"], &query.pairs()).await?;
            out.emit(&answer, task_list);
        }
        TaskCommand::Tree { id } => {
            let answer = client.get(&["tasks", &id, "tree"], &[]).await?;
            out.emit(&answer, tree);
        }
        TaskCommand::Deps(DepsCommand::Add { task, blocker }) => {
            let body = Body::new().set("depends_on_task_id", blocker);
            let answer = client
                .post(&["tasks", &task, "dependencies"], body.build())
                .await?;
            out.emit(&answer, task_and_run);
        }
        TaskCommand::Deps(DepsCommand::Rm { task, blocker }) => {
            let answer = client
                .delete(&["tasks", &task, "dependencies", &blocker])
                .await?;
            out.emit(&answer, task_and_run);
        }
        TaskCommand::Runs {
            id,
            status,
            session_id,
            page,
        } => {
            let query = Query::new()
                .opt("status", status)
                .opt("session_id", session_id);
            let answer = client
                .get(&["tasks", &id, "runs"], &page.query(query).pairs())
                .await?;
            out.emit(&answer, |out, body| {
                runs_table(out, &body["runs"]);
                next_cursor(out, body);
            });
        }
        TaskCommand::Timeline { id, after, page } => {
            let query = page.query(Query::new().opt("after_sequence", after));
            let answer = client
                .get(&["tasks", &id, "timeline"], &query.pairs())
                .await?;
            out.emit(&answer, timeline);
        }
        TaskCommand::Watch { id, after } => watch::follow(&client, &out, &id, after).await?,
    }
    Ok(())
}

async fn execute(client: &Client, out: &Printer, action: &str, args: &ExecuteArgs) -> Outcome {
    let answer = client
        .post(&["tasks", &args.id, action], args.body()?)
        .await?;
    out.emit(&answer, task_and_run);
    Ok(())
}

/// `{"task":…}` with an optional `"run"` (the answer of most task writes), or the task detail
/// (the answer of dependency changes).
fn task_and_run(out: &Printer, body: &Value) {
    if body["task"]["task"].is_object() {
        return task_detail(out, body);
    }
    task_fields(out, &body["task"]);
    if body.get("run").is_some_and(Value::is_object) {
        out.line("");
        out.line("run");
        run_fields(out, &body["run"]);
    }
}

fn task_fields(out: &Printer, task: &Value) {
    let approval = match text(task, &["approval_policy"]) {
        "manual" => format!("manual, {}", text(task, &["approval_state"])),
        _ => String::new(),
    };
    let scope = match text(task, &["workspace"]) {
        "" => scalar(task, &["scope"]),
        ws => format!("{} {ws}", text(task, &["scope"])),
    };
    let when = |key: &str| match text(task, &[key]) {
        "" => String::new(),
        at => format!("{} ({at})", ago(at)),
    };
    out.fields(&[
        ("id", scalar(task, &["id"])),
        ("title", scalar(task, &["title"])),
        ("status", out.paint(text(task, &["status"]))),
        ("priority", scalar(task, &["priority"])),
        ("scope", scope),
        ("approval", approval),
        ("parent", scalar(task, &["parent_task_id"])),
        ("owner", actor(task, "owner")),
        ("channel", scalar(task, &["network_channel"])),
        ("max attempts", scalar(task, &["max_attempts"])),
        ("description", scalar(task, &["description"])),
        ("created", when("created_at")),
        ("updated", when("updated_at")),
    ]);
}

fn task_list(out: &Printer, body: &Value) {
    let mut table = out.table(&["id", "status", "priority", "title", "run", "activity"]);
    for task in body["tasks"].as_array().into_iter().flatten() {
        let run = match task.get("active_run") {
            Some(run) => format!("{} #{}", text(run, &["status"]), scalar(run, &["attempt"])),
            None => String::new(),
        };
        let activity = match text(task, &["last_activity_at"]) {
            "" => text(task, &["updated_at"]),
            at => at,
        };
        table.add_row(vec![
            comfy_table::Cell::new(text(task, &["id"])),
            out.status(text(task, &["status"])),
            comfy_table::Cell::new(text(task, &["priority"])),
            comfy_table::Cell::new(text(task, &["title"])),
            comfy_table::Cell::new(run),
            comfy_table::Cell::new(ago(activity)),
        ]);
    }
    if table.row_count() == 0 {
        out.line("no tasks");
    } else {
        out.print_table(&table);
    }
    next_cursor(out, body);
}

fn next_cursor(out: &Printer, body: &Value) {
    if let Some(cursor) = body.get("next_cursor").and_then(Value::as_str) {
        out.line(&format!("more: --cursor {cursor}"));
    }
}

/// `{"task":{"task","summary","children","dependencies","dependency_references","runs","events"}}`.
fn task_detail(out: &Printer, body: &Value) {
    let task = &body["task"];
    task_fields(out, &task["task"]);
    // The references carry the blocker's title and status; the bare edges only its id.
    let deps = ["dependency_references", "dependencies"]
        .iter()
        .find_map(|key| task[*key].as_array().filter(|d| !d.is_empty()).cloned())
        .unwrap_or_default();
    if !deps.is_empty() {
        out.line("");
        out.line("depends on");
        let mut table = out.table(&["task", "status", "title"]);
        for dep in &deps {
            let blocker = dep.get("depends_on").unwrap_or(dep);
            let id = match text(dep, &["depends_on_task_id"]) {
                "" => text(blocker, &["id"]),
                id => id,
            };
            table.add_row(vec![
                comfy_table::Cell::new(id),
                out.status(text(blocker, &["status"])),
                comfy_table::Cell::new(text(blocker, &["title"])),
            ]);
        }
        out.print_table(&table);
    }
    let children = task["children"].as_array().cloned().unwrap_or_default();
    if !children.is_empty() {
        out.line("");
        out.line("children");
        let mut table = out.table(&["task", "status", "title"]);
        for child in &children {
            table.add_row(vec![
                comfy_table::Cell::new(text(child, &["id"])),
                out.status(text(child, &["status"])),
                comfy_table::Cell::new(text(child, &["title"])),
            ]);
        }
        out.print_table(&table);
    }
    if task["runs"].as_array().is_some_and(|r| !r.is_empty()) {
        out.line("");
        out.line("runs");
        runs_table(out, &task["runs"]);
    }
    if let Some(events) = task["events"].as_array().filter(|e| !e.is_empty()) {
        out.line("");
        out.line("events (newest first)");
        let mut table = out.table(&["seq", "event", "actor", "when"]);
        for event in events.iter().take(10) {
            table.add_row(vec![
                right(scalar(event, &["sequence"])),
                comfy_table::Cell::new(text(event, &["event_type"])),
                comfy_table::Cell::new(actor(event, "actor")),
                comfy_table::Cell::new(ago(text(event, &["timestamp"]))),
            ]);
        }
        out.print_table(&table);
        if events.len() > 10 {
            out.line(&format!(
                "… {} more: tasklane task timeline {}",
                events.len() - 10,
                text(task, &["task", "id"])
            ));
        }
    }
}

fn tree(out: &Printer, body: &Value) {
    let tree = &body["tree"];
    let mut table = out.table(&["task", "status", "title", "run", "activity"]);
    let nodes =
        std::iter::once(&tree["root"]).chain(tree["descendants"].as_array().into_iter().flatten());
    for node in nodes {
        let depth = node["depth"].as_u64().unwrap_or(0) as usize;
        let run = match node.get("active_run") {
            Some(run) => format!("{} #{}", text(run, &["status"]), scalar(run, &["attempt"])),
            None => String::new(),
        };
        table.add_row(vec![
            comfy_table::Cell::new(format!(
                "{}{}",
                "  ".repeat(depth),
                text(node, &["task", "id"])
            )),
            out.status(text(node, &["task", "status"])),
            comfy_table::Cell::new(text(node, &["task", "title"])),
            comfy_table::Cell::new(run),
            comfy_table::Cell::new(ago(text(node, &["last_activity_at"]))),
        ]);
    }
    out.print_table(&table);
    if tree["descendants_truncated"].as_bool() == Some(true) {
        out.line("more descendants: tasklane task children <id> pages through any node's children");
    }
}

fn timeline(out: &Printer, body: &Value) {
    let mut table = out.table(&["seq", "event", "run", "actor", "when"]);
    for event in body["timeline"].as_array().into_iter().flatten() {
        table.add_row(vec![
            right(scalar(event, &["sequence"])),
            comfy_table::Cell::new(text(event, &["event_type"])),
            comfy_table::Cell::new(text(event, &["run", "id"])),
            comfy_table::Cell::new(actor(event, "actor")),
            comfy_table::Cell::new(ago(text(event, &["timestamp"]))),
        ]);
    }
    if table.row_count() == 0 {
        out.line("no events");
    } else {
        out.print_table(&table);
    }
    next_cursor(out, body);
}
