//! Tasklane load generator. Starts a release `tasklane serve` on a fresh SQLite file (or targets a
//! running server with `--url`), then measures operator scenarios with 1..N concurrent clients and
//! prints a Markdown table: operations per second and per-request latency percentiles.
//! With `--workload`, it instead runs one work-queue workload (`queue`) on a server it starts on
//! `--database` (or `--nodes N` servers on one PostgreSQL database) and prints one JSON row:
//! `bench/run` collects these next to the peer queues.
//!
//! Not part of the test suite: it reports figures, it asserts nothing about speed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod queue;
mod server;

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(about = "Tasklane benchmark: operator throughput and latency")]
struct Args {
    /// Benchmark a running server instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// The tasklane binary to start (build it with `cargo build --release` first).
    #[arg(long, default_value = "target/release/tasklane")]
    tasklane_bin: String,
    /// Concurrent client counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    clients: Vec<usize>,
    /// Operations per scenario and client count (cycles for the cycle scenario).
    #[arg(long, default_value_t = 3000)]
    ops: usize,
    /// Scenarios: create, start, cycle (operator claim→start→complete), agent-cycle
    /// (claim-next→complete), pickup (enqueue → claim returned to a long-polling agent).
    #[arg(long, value_delimiter = ',', default_value = "create,start,cycle")]
    scenarios: Vec<String>,
    /// Enqueues measured by the pickup scenario.
    #[arg(long, default_value_t = 500)]
    pickups: usize,
    /// Run one work-queue workload (burn-down, deep, pickup, steady, crash) on a fresh server
    /// and print its result as one JSON row instead of the scenario table. Used by `bench/run`.
    #[arg(long)]
    workload: Option<String>,
    /// Workload: concurrent agent sessions (workers).
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Workload: jobs queued (burn-down, deep, crash) or enqueued (pickup).
    #[arg(long, default_value_t = 20_000)]
    jobs: usize,
    /// Workload steady: offered enqueues per second, for `--duration-s` seconds.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    duration_s: f64,
    /// Workload pickup: milliseconds between enqueues.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Workload: concurrent clients creating and enqueueing jobs before timing starts.
    #[arg(long, default_value_t = 32)]
    seed_clients: usize,
    /// Workload: database of the server it starts (sqlite://<path> or postgres://...).
    #[arg(long)]
    database: Option<String>,
    /// Workload: give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    timeout_s: u64,
    /// Workload burn-down/deep: each worker hosts this many agent sessions and works in batches
    /// (claim-batch for all of them, then one complete-batch); 0 = one session per worker,
    /// claim-next → complete.
    #[arg(long, default_value_t = 0)]
    batch: usize,
    /// Workload: Tasklane servers to start on `--database`, one service (PostgreSQL only when
    /// more than 1). Workers are spread round-robin over them, and enqueues too, except in pickup
    /// (all enqueues on node 0: wake-ups cross nodes). CPU is summed, peak RSS the largest.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

struct Server {
    _served: Option<server::Served>,
    _dir: Option<tempdir::Dir>,
    url: String,
}

mod tempdir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Server {
    fn start(args: &Args) -> Server {
        if let Some(url) = &args.url {
            return Server {
                _served: None,
                _dir: None,
                url: url.trim_end_matches('/').to_string(),
            };
        }
        let dir = std::env::temp_dir().join(format!("tasklane-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        let database = format!("sqlite://{}/bench.db", dir.display());
        let served = server::Served::start(&args.tasklane_bin, &database, "127.0.0.1:0");
        Server {
            url: served.url.clone(),
            _served: Some(served),
            _dir: Some(tempdir::Dir(dir)),
        }
    }
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let resp = http.post(url).json(&body).send().await.expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "unexpected {status}: {v}");
    v
}

/// Runs `ops` operations spread over `clients` workers; `op(worker, i)` performs operation `i`.
/// Returns (elapsed, sorted latencies).
async fn drive<F, Fut>(clients: usize, ops: usize, op: F) -> (Duration, Vec<Duration>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in 0..clients {
        let next = next.clone();
        let op = op.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let t = Instant::now();
                op(worker, i).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(ops);
    for h in handles {
        all.extend(h.await.expect("worker"));
    }
    let elapsed = started.elapsed();
    all.sort();
    (elapsed, all)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

async fn create_tasks(http: &reqwest::Client, base: &str, n: usize, clients: usize) -> Vec<String> {
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(n)));
    let (http2, base2, ids2) = (http.clone(), base.to_string(), ids.clone());
    drive(clients.max(8), n, move |_, i| {
        let (http, base, ids) = (http2.clone(), base2.clone(), ids2.clone());
        async move {
            let v = post(
                &http,
                format!("{base}/api/tasks"),
                json!({"scope":"global","title":format!("bench {i}")}),
            )
            .await;
            ids.lock()
                .unwrap()
                .push(v["task"]["id"].as_str().unwrap().to_string());
        }
    })
    .await;
    let v = ids.lock().unwrap().clone();
    v
}

async fn start_all(http: &reqwest::Client, base: &str, ids: &[String]) {
    let ids = Arc::new(ids.to_vec());
    let (http, base) = (http.clone(), base.to_string());
    drive(16, ids.len(), move |_, i| {
        let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
        async move {
            post(
                &http,
                format!("{base}/api/tasks/{}/start", ids[i]),
                json!({}),
            )
            .await;
        }
    })
    .await;
}

async fn agent_post(
    http: &reqwest::Client,
    base: &str,
    session: &str,
    op: &str,
    body: Value,
) -> Value {
    let resp = http
        .post(format!("{base}/api/agent/tasks/{op}"))
        .header("X-AGH-Session-ID", session)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{op}: unexpected {status}: {v}");
    v
}

/// `agents` sessions long-poll claim-next; one producer starts tasks one at a time. Latency is
/// from sending the start request to the moment an agent holds the claim. Returns the total
/// elapsed time and the sorted pickup latencies.
async fn pickup(
    http: &reqwest::Client,
    base: &str,
    agents: usize,
    n: usize,
) -> (Duration, Vec<Duration>) {
    let ids = create_tasks(http, base, n, 8).await;
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> =
        Default::default();
    let picked = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for a in 0..agents {
        let (http, base, sent, picked) =
            (http.clone(), base.to_string(), sent.clone(), picked.clone());
        workers.push(tokio::spawn(async move {
            let session = format!("pickup-{a}");
            let mut lat = Vec::new();
            while picked.load(Ordering::SeqCst) < n {
                let resp = http
                    .post(format!("{base}/api/agent/tasks/claim-next"))
                    .header("X-AGH-Session-ID", &session)
                    .json(&json!({"wait": true, "wait_seconds": 2}))
                    .send()
                    .await
                    .expect("claim");
                if resp.status() == reqwest::StatusCode::NO_CONTENT {
                    continue;
                }
                let got = Instant::now();
                let v: Value = resp.json().await.expect("claim body");
                let task = v["claim"]["task"]["id"].as_str().unwrap().to_string();
                let run = v["claim"]["run"]["id"].as_str().unwrap().to_string();
                // The producer records the send time before sending, so it is always there.
                let t0 = sent.lock().unwrap().get(&task).copied().expect("send time");
                lat.push(got.saturating_duration_since(t0));
                picked.fetch_add(1, Ordering::SeqCst);
                agent_post(
                    &http,
                    &base,
                    &session,
                    &format!("{run}/complete"),
                    json!({}),
                )
                .await;
            }
            lat
        }));
    }
    // Let every agent park before the first enqueue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for id in &ids {
        sent.lock().unwrap().insert(id.clone(), Instant::now());
        post(http, format!("{base}/api/tasks/{id}/start"), json!({})).await;
        // Pace enqueues so agents are parked (not busy) when work arrives.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.expect("agent"));
    }
    all.sort();
    (started.elapsed(), all)
}

/// `--nodes N`: at least 1; more than 1 only for a workload on a PostgreSQL database (servers on
/// one SQLite file are not one service).
fn check_nodes(args: &Args) -> Result<(), String> {
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    if args.nodes == 1 {
        return Ok(());
    }
    if args.workload.is_none() {
        return Err("--nodes > 1 applies to --workload runs only".into());
    }
    let db = args.database.as_deref().unwrap_or("");
    if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
        return Err(format!(
            "--nodes {} needs a postgres:// --database: several servers on one SQLite file are \
             not one service (got {db:?})",
            args.nodes
        ));
    }
    Ok(())
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = check_nodes(&args) {
        eprintln!("tasklane-bench: {e}");
        std::process::exit(2);
    }
    if let Some(workload) = args.workload.clone() {
        let Some(database) = args.database.clone() else {
            eprintln!(
                "tasklane-bench: --workload needs --database (a fresh sqlite:// file or \
                 postgres:// database)"
            );
            std::process::exit(2);
        };
        let row = queue::run(queue::Params {
            workload,
            workers: args.workers,
            jobs: args.jobs,
            rate: args.rate,
            duration_s: args.duration_s,
            interval_ms: args.interval_ms,
            seed_clients: args.seed_clients,
            database,
            tasklane_bin: args.tasklane_bin.clone(),
            nodes: args.nodes,
            timeout_s: args.timeout_s,
            batch: args.batch,
        })
        .await;
        println!("{row}");
        return;
    }
    let server = Server::start(&args);
    let base = server.url.clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    println!("| scenario | clients | ops | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for scenario in &args.scenarios {
        for &clients in &args.clients {
            let ops = args.ops;
            let (elapsed, lat) = match scenario.as_str() {
                "create" => {
                    let (http, base) = (http.clone(), base.clone());
                    drive(clients, ops, move |_, i| {
                        let (http, base) = (http.clone(), base.clone());
                        async move {
                            post(
                                &http,
                                format!("{base}/api/tasks"),
                                json!({"scope":"global","title":format!("t{i}"),"priority":"high"}),
                            )
                            .await;
                        }
                    })
                    .await
                }
                "start" => {
                    let ids = Arc::new(create_tasks(&http, &base, ops, clients).await);
                    let (http, base) = (http.clone(), base.clone());
                    drive(clients, ops, move |_, i| {
                        let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
                        async move {
                            post(
                                &http,
                                format!("{base}/api/tasks/{}/start", ids[i]),
                                json!({}),
                            )
                            .await;
                        }
                    })
                    .await
                }
                "cycle" => {
                    let ids = create_tasks(&http, &base, ops, clients).await;
                    let mut runs = Vec::with_capacity(ops);
                    for id in &ids {
                        let v =
                            post(&http, format!("{base}/api/tasks/{id}/start"), json!({})).await;
                        runs.push(v["run"]["id"].as_str().unwrap().to_string());
                    }
                    let runs = Arc::new(runs);
                    let (http, base) = (http.clone(), base.clone());
                    drive(clients, ops, move |_, i| {
                        let (http, base, runs) = (http.clone(), base.clone(), runs.clone());
                        async move {
                            let run = &runs[i];
                            post(
                                &http,
                                format!("{base}/api/task-runs/{run}/claim"),
                                json!({}),
                            )
                            .await;
                            post(
                                &http,
                                format!("{base}/api/task-runs/{run}/start"),
                                json!({}),
                            )
                            .await;
                            post(
                                &http,
                                format!("{base}/api/task-runs/{run}/complete"),
                                json!({"result":{"ok":true}}),
                            )
                            .await;
                        }
                    })
                    .await
                }
                "agent-cycle" => {
                    let ids = create_tasks(&http, &base, ops, clients).await;
                    start_all(&http, &base, &ids).await;
                    let (http, base) = (http.clone(), base.clone());
                    drive(clients, ops, move |worker, _| {
                        let (http, base) = (http.clone(), base.clone());
                        async move {
                            // One session per worker; each cycle claims and completes.
                            let session = format!("agent-{worker}");
                            let claim =
                                agent_post(&http, &base, &session, "claim-next", json!({})).await;
                            let run = claim["claim"]["run"]["id"]
                                .as_str()
                                .expect("a run to claim")
                                .to_string();
                            agent_post(
                                &http,
                                &base,
                                &session,
                                &format!("{run}/complete"),
                                json!({"result":{"ok":true}}),
                            )
                            .await;
                        }
                    })
                    .await
                }
                "pickup" => pickup(&http, &base, clients, args.pickups).await,
                other => panic!("unknown scenario {other}"),
            };
            let ops = lat.len();
            println!(
                "| {scenario} | {clients} | {ops} | {:.0} | {:.2} | {:.2} |",
                ops as f64 / elapsed.as_secs_f64(),
                pct(&lat, 0.50),
                pct(&lat, 0.99)
            );
        }
    }
}
