//! Observe benchmark: dashboard, inbox and task-list latency on large databases, and the cost of
//! idle SSE streams. Not part of the test suite: it reports figures, it asserts nothing.
//!
//! `seed` fills a SQLite file through the real store (schema, migrations, triggers that maintain
//! the observe counters) in large write batches, far faster than HTTP. `latency` starts a release
//! `tasklane serve` on that file and measures sequential requests. `streams` holds N idle SSE
//! connections and reports the server's memory and CPU.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use tasklane_core::model::{
    ApprovalPolicy, ApprovalState, NewEvent, Priority, Ref, Run, RunStatus, Scope, Task, TaskStatus,
};
use tasklane_core::time::Ts;
use tasklane_store::{SqliteStore, StoreOptions};

#[derive(Parser)]
#[command(about = "Tasklane observe benchmark")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Seed a database with `tasks` tasks (runs and events in proportion).
    Seed {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        tasks: usize,
        #[arg(long, default_value_t = 5000)]
        batch: usize,
    },
    /// Measure dashboard, inbox and task list latency against a seeded database.
    Latency {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value = "target/release/tasklane")]
        tasklane_bin: String,
        #[arg(long, default_value_t = 300)]
        requests: usize,
    },
    /// Hold `n` idle SSE streams and report the server's memory and CPU.
    Streams {
        #[arg(long)]
        db: PathBuf,
        #[arg(long, default_value = "target/release/tasklane")]
        tasklane_bin: String,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 30)]
        idle_seconds: u64,
    },
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.cmd {
        Cmd::Seed { db, tasks, batch } => rt.block_on(seed(db, tasks, batch)),
        Cmd::Latency {
            db,
            tasklane_bin,
            requests,
        } => rt.block_on(latency(db, &tasklane_bin, requests)),
        Cmd::Streams {
            db,
            tasklane_bin,
            n,
            idle_seconds,
        } => rt.block_on(streams(db, &tasklane_bin, n, idle_seconds)),
    }
}

// ---------------------------------------------------------------------------------------------
// seeding

/// What the i-th task becomes, in per-mille: mostly finished work, as an old database is.
fn kind_of(i: usize) -> &'static str {
    match i % 1000 {
        0..=899 => "completed",
        900..=929 => "failed",
        930..=939 => "approval",
        940..=949 => "dep_blocked",
        950..=969 => "queued",
        970..=971 => "running",
        972..=989 => "canceled",
        _ => "draft",
    }
}

fn human(n: usize) -> Ref {
    Ref::new("human", format!("user-{n}"))
}

fn base_task(i: usize, now: Ts) -> Task {
    let created = Ts(now.0 - (1_000_000 - (i as i64 % 1_000_000)) * 1_000_000);
    // One task in 40 is the benchmark caller's (local-user), so my_work is not empty.
    let owner = if i.is_multiple_of(40) {
        Some(Ref::new("human", "local-user"))
    } else {
        Some(human(i % 20))
    };
    Task {
        id: format!("task-{i:08}"),
        identifier: Some(format!("T-{i}")),
        scope: if i.is_multiple_of(4) {
            Scope::Workspace
        } else {
            Scope::Global
        },
        workspace_id: i.is_multiple_of(4).then(|| format!("ws-{}", i % 8)),
        parent_task_id: None,
        network_channel: i.is_multiple_of(3).then(|| format!("ch-{}", i % 5)),
        title: format!("benchmark task {i}"),
        description: None,
        priority: [
            Priority::Low,
            Priority::Medium,
            Priority::High,
            Priority::Urgent,
        ][i % 4],
        max_attempts: 3,
        auto_enqueue_on_ready: false,
        status: TaskStatus::Ready,
        approval_policy: ApprovalPolicy::None,
        approval_state: ApprovalState::NotRequired,
        owner,
        current_run_id: None,
        latest_event_seq: 0,
        created_by: Ref::new("human", "local-user"),
        origin: Ref::new("http", "tasks.create"),
        created_at: created,
        updated_at: created,
        closed_at: None,
        last_activity_at: created,
        metadata: None,
        required_capabilities: Vec::new(),
        preferred_capabilities: Vec::new(),
    }
}

fn run_of(t: &Task, status: RunStatus) -> Run {
    let q = t.created_at;
    let claimed = (status != RunStatus::Queued).then(|| q.plus_seconds(5));
    let started = claimed.map(|c| c.plus_seconds(3));
    let ended = status.is_terminal().then(|| q.plus_seconds(60));
    Run {
        id: format!("run-{}", &t.id[5..]),
        task_id: t.id.clone(),
        status,
        attempt: 1,
        claimed_by: claimed.map(|_| Ref::new("agent_session", "sess-bench")),
        session_id: (status == RunStatus::Running).then(|| "sess-bench".to_string()),
        origin: Ref::new("http", "tasks.enqueue"),
        idempotency_key: None,
        network_channel: t.network_channel.clone(),
        coordination_channel_id: None,
        claim_token_hash: None,
        lease_until: None,
        heartbeat_at: None,
        lease_expirations: 0,
        queued_at: q,
        claimed_at: claimed,
        started_at: started,
        ended_at: ended,
        error: (status == RunStatus::Failed).then(|| "benchmark failure".to_string()),
        metadata: None,
        result: None,
        required_capabilities: Vec::new(),
        preferred_capabilities: Vec::new(),
        priority: t.priority,
        claim_idempotency_key: None,
        session_token: None,
        claim_audience: tasklane_core::claim_audience::of_task(t),
    }
}

fn event(t: &Task, run: Option<&Run>, ty: &'static str, at: Ts, n: usize) -> NewEvent {
    NewEvent {
        id: format!("evt-{}-{n}", &t.id[5..]),
        task_id: t.id.clone(),
        run_id: run.map(|r| r.id.clone()),
        event_type: ty,
        actor: Ref::new("human", "local-user"),
        origin: Ref::new("http", "tasks.bench"),
        payload: json!({"status": t.status.as_str()}),
        timestamp: at,
    }
}

/// Builds and writes task `i` with its run and events.
fn write_one(
    w: &mut dyn tasklane_core::store::WriteStore,
    i: usize,
    now: Ts,
) -> tasklane_core::Result<()> {
    let mut t = base_task(i, now);
    let kind = kind_of(i);
    let run_status = match kind {
        "completed" => Some(RunStatus::Completed),
        "failed" => Some(RunStatus::Failed),
        "queued" => Some(RunStatus::Queued),
        "running" => Some(RunStatus::Running),
        "canceled" => Some(RunStatus::Canceled),
        _ => None,
    };
    t.status = match kind {
        "completed" => TaskStatus::Completed,
        "failed" => TaskStatus::Failed,
        "approval" | "dep_blocked" => TaskStatus::Blocked,
        "running" => TaskStatus::InProgress,
        "canceled" => TaskStatus::Canceled,
        "draft" => TaskStatus::Draft,
        _ => TaskStatus::Ready,
    };
    if kind == "approval" {
        t.approval_policy = ApprovalPolicy::Manual;
        t.approval_state = ApprovalState::Pending;
    }
    let run = run_status.map(|s| run_of(&t, s));
    if let Some(r) = &run {
        if r.status.is_terminal() {
            t.closed_at = r.ended_at;
            t.updated_at = r.ended_at.unwrap_or(t.updated_at);
        }
        if r.status.is_active() {
            t.current_run_id = Some(r.id.clone());
        }
    }
    w.insert_task(&t)?;
    w.append_event(&event(&t, None, "task.created", t.created_at, 0))?;
    if kind == "dep_blocked" && i > 0 {
        w.insert_dependency(&tasklane_core::model::Dependency {
            task_id: t.id.clone(),
            depends_on_task_id: format!("task-{:08}", i - 1),
            kind: "blocks",
            created_at: t.created_at,
        })?;
    }
    if let Some(r) = &run {
        w.insert_run(r)?;
        w.append_event(&event(&t, Some(r), "task.run_enqueued", r.queued_at, 1))?;
        if let Some(s) = r.started_at {
            w.append_event(&event(&t, Some(r), "task.run_started", s, 2))?;
        }
        if let Some(e) = r.ended_at {
            let ty = match r.status {
                RunStatus::Completed => "task.run_completed",
                RunStatus::Failed => "task.run_failed",
                _ => "task.run_canceled",
            };
            w.append_event(&event(&t, Some(r), ty, e, 3))?;
        }
    }
    Ok(())
}

async fn seed(db: PathBuf, tasks: usize, batch: usize) {
    let store = SqliteStore::open(&db, StoreOptions::default()).expect("open store");
    let now = Ts(chrono_now_micros());
    let started = Instant::now();
    let mut done = 0;
    while done < tasks {
        let end = (done + batch).min(tasks);
        store
            .write(move |w| {
                for i in done..end {
                    write_one(w, i, now)?;
                }
                Ok(())
            })
            .await
            .expect("seed batch");
        done = end;
        if done % (batch * 20) == 0 || done == tasks {
            eprintln!("seeded {done}/{tasks} in {:.1?}", started.elapsed());
        }
    }
    store.shutdown();
}

fn chrono_now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// server and measurements

struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(bin: &str, db: &Path) -> Served {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite://{}", db.display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e} (cargo build --release first)"));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read start-up line");
    let url = line.trim().rsplit(' ').next().expect("url").to_string();
    Served { child, url }
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn measure(http: &reqwest::Client, url: &str, n: usize) -> (f64, f64, usize) {
    // Warm the statement caches and the page cache first.
    let mut bytes = 0;
    for _ in 0..10 {
        bytes = http
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len();
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = http.get(url).send().await.expect("request");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let _ = resp.bytes().await.unwrap();
        lat.push(t.elapsed());
    }
    lat.sort();
    (pct(&lat, 0.5), pct(&lat, 0.99), bytes)
}

async fn latency(db: PathBuf, bin: &str, requests: usize) {
    let server = serve(bin, &db);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let probe: Value = http
        .get(format!("{}/api/observe/tasks/dashboard", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let totals = &probe["dashboard"]["totals"];
    println!(
        "database: {} tasks, {} runs",
        totals["tasks_total"], totals["runs_total"]
    );
    println!("| endpoint | p50 ms | p99 ms | response bytes |");
    println!("|---|---|---|---|");
    for (name, path) in [
        ("dashboard", "/api/observe/tasks/dashboard"),
        (
            "dashboard (workspace filter)",
            "/api/observe/tasks/dashboard?scope=workspace&workspace=ws-0",
        ),
        ("inbox (limit=100)", "/api/observe/tasks/inbox?limit=100"),
        (
            "inbox (lane=my_work, limit=100)",
            "/api/observe/tasks/inbox?lane=my_work&limit=100",
        ),
        (
            "inbox (workspace filter, limit=100)",
            "/api/observe/tasks/inbox?scope=workspace&workspace=ws-0&limit=100",
        ),
        (
            "inbox (unread, limit=100)",
            "/api/observe/tasks/inbox?unread=true&limit=100",
        ),
        (
            "inbox (query scan, limit=100)",
            "/api/observe/tasks/inbox?query=task%2012&limit=100",
        ),
        ("task list (limit=50)", "/api/tasks?limit=50"),
    ] {
        let (p50, p99, bytes) = measure(&http, &format!("{}{path}", server.url), requests).await;
        println!("| {name} | {p50:.2} | {p99:.2} | {bytes} |");
    }
}

fn proc_stat(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 (1-based) of the whole line: 12 and 13 after ')'.
    let ticks: u64 = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    (rss_kb, ticks as f64 / 100.0)
}

async fn streams(db: PathBuf, bin: &str, n: usize, idle_seconds: u64) {
    let server = serve(bin, &db);
    let pid = server.child.id();
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let task = "task-00000000";
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss0, cpu0) = proc_stat(pid);
    let seq: i64 = http
        .get(format!("{}/api/tasks/{task}", server.url))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["task"]["task"]["latest_event_seq"]
        .as_i64()
        .unwrap_or(0);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let mut resp = http
            .get(format!(
                "{}/api/tasks/{task}/stream?after_sequence={seq}",
                server.url
            ))
            .send()
            .await
            .expect("open stream");
        let first = resp.chunk().await.unwrap().unwrap_or_default();
        assert!(first.starts_with(b"retry:"), "stream did not start");
        conns.push(resp);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, cpu1) = proc_stat(pid);
    tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
    let (rss2, cpu2) = proc_stat(pid);
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| server RSS before streams | {:.1} MiB |",
        rss0 as f64 / 1024.0
    );
    println!(
        "| server RSS with {n} idle streams | {:.1} MiB |",
        rss1 as f64 / 1024.0
    );
    println!(
        "| memory per idle stream | {:.1} KiB |",
        (rss1.saturating_sub(rss0)) as f64 / n as f64
    );
    println!("| CPU to open {n} streams | {:.2} s |", cpu1 - cpu0);
    println!(
        "| CPU while idle for {idle_seconds} s | {:.2} s ({:.2}% of one core) |",
        cpu2 - cpu1,
        (cpu2 - cpu1) / idle_seconds as f64 * 100.0
    );
    println!(
        "| server RSS after idle | {:.1} MiB |",
        rss2 as f64 / 1024.0
    );
    drop(conns);
}
