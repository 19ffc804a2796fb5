//! The work-queue workloads that `bench/run` runs against Tasklane and the peer queues alike:
//! burn-down, deep, pickup, steady and crash. Each run starts its own server (or, with `nodes` N on
//! a PostgreSQL database, N servers on that one database: one service) and prints one JSON row on
//! stdout (progress goes to stderr).
//!
//! With several nodes, workers are spread round-robin over them (worker w on node w mod N) and
//! enqueues too (job i on node i mod N), except in pickup, where every enqueue goes to node 0 so
//! that most pickups need a wake-up from another node. The row's CPU is the sum of the servers'
//! CPU and its peak RSS the largest server's.
//!
//! A job is a task with a queued run: "enqueue" is `POST /api/tasks/{id}/start` on a task created
//! beforehand, and a worker is an agent session looping `claim-next` → `complete` with a no-op
//! handler, or (with `batch` K) a worker process hosting K sessions that loops `claim-batch` for
//! all K → one `complete-batch`. Every loop is bounded by a count and by the workload's deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::server::Served;

pub struct Params {
    pub workload: String,
    pub workers: usize,
    pub jobs: usize,
    /// Offered enqueues per second (steady).
    pub rate: f64,
    /// Seconds of offered load (steady).
    pub duration_s: f64,
    /// Spacing of enqueues in the pickup workload.
    pub interval_ms: u64,
    /// Concurrent clients that create and enqueue the jobs before timing starts.
    pub seed_clients: usize,
    pub database: String,
    pub tasklane_bin: String,
    /// Servers started on `database` (1, or more on PostgreSQL).
    pub nodes: usize,
    /// The whole workload gives up after this long.
    pub timeout_s: u64,
    /// Burn-down and deep: agent sessions per worker, worked in batches (0: one session per
    /// worker, claim-next → complete).
    pub batch: usize,
}

type Res<T> = Result<T, String>;

/// An agent's pickups: (task id, when its claim arrived).
type Pickups = tokio::task::JoinHandle<Res<Vec<(String, Instant)>>>;

/// The servers of one run, all on the same database.
pub struct Cluster {
    nodes: Vec<Served>,
    /// The PostgreSQL database name, whose backends' CPU is counted too.
    pg_db: Option<String>,
}

/// CPU readings at the start of a timed phase.
struct CpuMark {
    servers: f64,
    db: HashMap<u32, f64>,
}

impl Cluster {
    /// Starts `n` servers one after the other (each migrates at start, so the next finds the
    /// schema in place).
    fn start(bin: &str, database: &str, n: usize) -> Cluster {
        let nodes = (0..n.max(1))
            .map(|_| Served::start(bin, database, "127.0.0.1:0"))
            .collect();
        let pg_db = ["postgres://", "postgresql://"]
            .iter()
            .find_map(|scheme| database.strip_prefix(scheme))
            .and_then(|rest| rest.split('?').next())
            .and_then(|rest| rest.rsplit_once('/'))
            .map(|(_, db)| db.to_string())
            .filter(|db| !db.is_empty());
        Cluster { nodes, pg_db }
    }

    fn cpu_mark(&self) -> CpuMark {
        CpuMark {
            servers: self.cpu_seconds(),
            db: self
                .pg_db
                .as_deref()
                .map(pg_backend_cpu)
                .unwrap_or_default(),
        }
    }

    /// CPU since `mark`: `server_cpu_s` (the Tasklane servers) and, on PostgreSQL, `db_cpu_s`
    /// (the backends connected to the database, as `bench/run` counts them for the peers).
    fn cpu_since(&self, mark: &CpuMark) -> Value {
        let mut out = json!({ "server_cpu_s": round2(self.cpu_seconds() - mark.servers) });
        if let Some(db) = &self.pg_db {
            let now = pg_backend_cpu(db);
            let used: f64 = now
                .iter()
                .map(|(pid, c)| c - mark.db.get(pid).copied().unwrap_or(0.0))
                .sum();
            merge(&mut out, json!({ "db_cpu_s": round2(used) }));
        }
        out
    }

    /// Base URLs, node 0 first.
    fn bases(&self) -> Vec<String> {
        self.nodes.iter().map(|s| s.url.clone()).collect()
    }

    /// User + system CPU seconds of all servers so far.
    fn cpu_seconds(&self) -> f64 {
        self.nodes.iter().map(Served::cpu_seconds).sum()
    }

    /// The largest server's peak RSS in MiB.
    fn peak_rss_mb(&self) -> f64 {
        let rss: Vec<f64> = self.nodes.iter().map(Served::peak_rss_mb).collect();
        if rss.iter().any(|r| r.is_nan()) {
            return f64::NAN;
        }
        rss.into_iter().fold(f64::NAN, f64::max)
    }
}

/// pid → CPU seconds of the PostgreSQL backends connected to `db` (their process title is
/// `postgres: <user> <db> <client> <state>`). Backends that exited are not counted.
fn pg_backend_cpu(db: &str) -> HashMap<u32, f64> {
    let needle = format!(" {db} ");
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !title.starts_with("postgres: ") || !title.contains(&needle) {
            continue;
        }
        if let Some(cpu) = crate::server::proc_cpu_seconds(pid) {
            out.insert(pid, cpu);
        }
    }
    out
}

/// Node of worker or job `i`: round-robin.
fn node(bases: &[String], i: usize) -> String {
    bases[i % bases.len()].clone()
}

/// Runs one workload and returns its row.
pub async fn run(p: Params) -> Value {
    let mut server = Cluster::start(&p.tasklane_bin, &p.database, p.nodes);
    let deadline = Instant::now() + Duration::from_secs(p.timeout_s);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut row = json!({
        "system": "tasklane", "workload": p.workload, "workers": p.workers, "jobs": p.jobs,
        "jobs_per_s": null, "p50_ms": null, "p99_ms": null,
    });
    let outcome = match p.workload.as_str() {
        "burn-down" | "deep" => burn_down(&http, &server, &p, deadline).await,
        "pickup" => pickup(&http, &server, &p, deadline).await,
        "steady" => steady(&http, &server, &p, deadline).await,
        "crash" => crash(&http, &mut server, &p, deadline).await,
        other => Err(format!("unknown workload {other}")),
    };
    match outcome {
        Ok(fields) => merge(&mut row, fields),
        Err(e) => merge(&mut row, json!({ "error": e })),
    }
    merge(
        &mut row,
        json!({ "peak_rss_mb": round2(server.peak_rss_mb()) }),
    );
    row
}

/// A JSON object with the fields of another added.
trait With {
    fn with(self, more: Value) -> Value;
}

impl With for Value {
    fn with(mut self, more: Value) -> Value {
        merge(&mut self, more);
        self
    }
}

fn merge(row: &mut Value, more: Value) {
    if let (Some(r), Value::Object(m)) = (row.as_object_mut(), more) {
        r.extend(m);
    }
}

fn round2(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 100.0).round() / 100.0)
    } else {
        Value::Null
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted milliseconds.
fn pct(sorted: &[f64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    round2(sorted[((sorted.len() as f64 - 1.0) * p).round() as usize])
}

async fn send(
    http: &reqwest::Client,
    url: String,
    session: Option<&str>,
    body: Value,
) -> Result<(StatusCode, Value), reqwest::Error> {
    let mut req = http.post(url).json(&body);
    if let Some(s) = session {
        req = req.header("X-AGH-Session-ID", s);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let v = resp.json().await.unwrap_or(Value::Null);
    Ok((status, v))
}

async fn expect_ok(
    http: &reqwest::Client,
    url: String,
    session: Option<&str>,
    body: Value,
) -> Res<Value> {
    match send(http, url.clone(), session, body).await {
        Ok((s, v)) if s.is_success() => Ok(v),
        Ok((s, v)) => Err(format!("{url}: {s} {v}")),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// Enqueues a run of task `id` (`POST /api/tasks/{id}/start`).
async fn enqueue(http: &reqwest::Client, base: &str, id: &str) -> Res<Value> {
    expect_ok(
        http,
        format!("{base}/api/tasks/{id}/start"),
        None,
        json!({}),
    )
    .await
}

async fn complete(http: &reqwest::Client, base: &str, session: &str, run: &str) -> Res<Value> {
    let url = format!("{base}/api/agent/tasks/{run}/complete");
    expect_ok(http, url, Some(session), json!({})).await
}

/// Awaits every task; the first failure wins.
async fn join_all<T>(handles: Vec<tokio::task::JoinHandle<Res<T>>>) -> Res<Vec<T>> {
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.map_err(|e| e.to_string())??);
    }
    Ok(out)
}

/// Creates `n` tasks with `clients` concurrent clients, and starts each (enqueues its run) when
/// `enqueue_too` is set; task i is created and enqueued on node i mod N. Returns the task ids in
/// creation order.
async fn seed(
    http: &reqwest::Client,
    bases: &[String],
    n: usize,
    clients: usize,
    enqueue_too: bool,
    deadline: Instant,
) -> Res<Vec<String>> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..clients.max(1) {
        let (http, bases, next) = (http.clone(), bases.to_vec(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() > deadline {
                    return Ok::<_, String>(ids);
                }
                let base = node(&bases, i);
                let v = expect_ok(
                    &http,
                    format!("{base}/api/tasks"),
                    None,
                    json!({"scope":"global","title":format!("job {i}")}),
                )
                .await?;
                let id = v["task"]["id"].as_str().ok_or("no task id")?.to_string();
                if enqueue_too {
                    enqueue(&http, &base, &id).await?;
                }
                ids.push((i, id));
                if (i + 1) % (n / 10).max(1) == 0 {
                    eprintln!("  seeded {}/{n} in {:.1?}", i + 1, started.elapsed());
                }
            }
        }));
    }
    let mut all: Vec<(usize, String)> = join_all(handles).await?.into_iter().flatten().collect();
    if all.len() < n {
        return Err(format!("seeding timed out after {}/{n} jobs", all.len()));
    }
    all.sort();
    Ok(all.into_iter().map(|(_, id)| id).collect())
}

/// All jobs queued up front; `workers` agents claim and complete until claim-next answers 204.
async fn burn_down(
    http: &reqwest::Client,
    server: &Cluster,
    p: &Params,
    deadline: Instant,
) -> Res<Value> {
    let bases = server.bases();
    seed(http, &bases, p.jobs, p.seed_clients, true, deadline).await?;
    let cpu0 = server.cpu_mark();
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for w in 0..p.workers {
        let (http, base, done) = (http.clone(), node(&bases, w), done.clone());
        let cap = p.jobs + 1;
        if p.batch > 0 {
            let sessions: Vec<String> = (0..p.batch).map(|k| format!("agent-{w}-{k}")).collect();
            handles.push(tokio::spawn(batched_worker(
                http, base, sessions, cap, done, deadline,
            )));
            continue;
        }
        handles.push(tokio::spawn(async move {
            let session = format!("agent-{w}");
            for _ in 0..cap {
                if Instant::now() > deadline {
                    return Err("deadline".to_string());
                }
                let url = format!("{base}/api/agent/tasks/claim-next");
                let (status, claim) = send(&http, url, Some(&session), json!({}))
                    .await
                    .map_err(|e| e.to_string())?;
                if status == StatusCode::NO_CONTENT {
                    return Ok(());
                }
                if !status.is_success() {
                    return Err(format!("claim-next: {status} {claim}"));
                }
                let run = claim["claim"]["run"]["id"].as_str().ok_or("no run id")?;
                complete(&http, &base, &session, run).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    join_all(handles).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    if done != p.jobs {
        return Err(format!("completed {done} of {} jobs", p.jobs));
    }
    Ok(json!({
        "jobs": done,
        "jobs_per_s": round2(done as f64 / elapsed),
    })
    .with(server.cpu_since(&cpu0)))
}

/// A worker process hosting `sessions`: claims a run for each in one `claim-batch`, runs the
/// no-op handlers, and reports every completion in one `complete-batch`, until nothing is left.
async fn batched_worker(
    http: reqwest::Client,
    base: String,
    sessions: Vec<String>,
    cap: usize,
    done: Arc<AtomicUsize>,
    deadline: Instant,
) -> Res<()> {
    for _ in 0..cap {
        if Instant::now() > deadline {
            return Err("deadline".to_string());
        }
        let url = format!("{base}/api/agent/tasks/claim-batch");
        let (status, v) = send(&http, url, None, json!({ "sessions": sessions }))
            .await
            .map_err(|e| e.to_string())?;
        if status == StatusCode::NO_CONTENT {
            return Ok(());
        }
        if !status.is_success() {
            return Err(format!("claim-batch: {status} {v}"));
        }
        let items: Vec<Value> = v["claims"]
            .as_array()
            .ok_or("no claims")?
            .iter()
            .map(|c| {
                json!({"run_id": c["run"]["id"], "session_id": c["session_id"],
                       "outcome": "completed"})
            })
            .collect();
        let url = format!("{base}/api/agent/tasks/complete-batch");
        let v = expect_ok(&http, url, None, json!({ "items": items })).await?;
        let results = v["results"].as_array().ok_or("no results")?;
        if let Some(bad) = results.iter().find(|r| r["ok"] != true) {
            return Err(format!("complete-batch: {bad}"));
        }
        done.fetch_add(results.len(), Ordering::Relaxed);
    }
    Ok(())
}

/// Agents parked in `claim-next` (wait) that claim and complete until `target` jobs are picked.
/// Returns, per task, the instant its claim reached an agent.
fn parked_agents(
    http: &reqwest::Client,
    bases: &[String],
    workers: usize,
    target: usize,
    deadline: Instant,
) -> Vec<Pickups> {
    let picked = Arc::new(AtomicUsize::new(0));
    (0..workers)
        .map(|w| {
            let (http, base, picked) = (http.clone(), node(bases, w), picked.clone());
            tokio::spawn(async move {
                let session = format!("agent-{w}");
                let mut got = Vec::new();
                while picked.load(Ordering::SeqCst) < target {
                    if Instant::now() > deadline {
                        return Err("deadline".to_string());
                    }
                    let url = format!("{base}/api/agent/tasks/claim-next");
                    let body = json!({"wait": true, "wait_seconds": 1});
                    let (status, claim) = send(&http, url, Some(&session), body)
                        .await
                        .map_err(|e| e.to_string())?;
                    if status == StatusCode::NO_CONTENT {
                        continue;
                    }
                    let at = Instant::now();
                    if !status.is_success() {
                        return Err(format!("claim-next: {status} {claim}"));
                    }
                    let task = claim["claim"]["task"]["id"].as_str().ok_or("no task id")?;
                    let run = claim["claim"]["run"]["id"].as_str().ok_or("no run id")?;
                    got.push((task.to_string(), at));
                    picked.fetch_add(1, Ordering::SeqCst);
                    complete(&http, &base, &session, run).await?;
                }
                Ok(got)
            })
        })
        .collect()
}

/// Enqueues `ids` on a fixed schedule (`interval` apart, open loop: a slow enqueue does not delay
/// the next; job i on `bases[i mod len]`), records when each enqueue returned, and collects the
/// agents' pickups.
/// Latency = claim received − enqueue returned, clamped at 0 (an agent can hold the claim a moment
/// before the producer has read the enqueue's response).
async fn offer(
    http: &reqwest::Client,
    bases: &[String],
    ids: Vec<String>,
    interval: Duration,
    agents: Vec<Pickups>,
    deadline: Instant,
) -> Res<(Vec<f64>, Instant, Instant)> {
    let returned: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let t0 = Instant::now();
    let mut enqueues = Vec::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        if Instant::now() > deadline {
            return Err("deadline while enqueueing".into());
        }
        tokio::time::sleep_until((t0 + interval * i as u32).into()).await;
        let (http, base, returned) = (http.clone(), node(bases, i), returned.clone());
        enqueues.push(tokio::spawn(async move {
            enqueue(&http, &base, &id).await?;
            returned.lock().unwrap().insert(id, Instant::now());
            Ok(())
        }));
    }
    join_all(enqueues).await?;
    let got: Vec<(String, Instant)> = join_all(agents).await?.into_iter().flatten().collect();
    let returned = returned.lock().unwrap();
    let mut lat: Vec<f64> = got
        .iter()
        .map(|(task, at)| ms(at.saturating_duration_since(returned[task])))
        .collect();
    lat.sort_by(f64::total_cmp);
    let last = got.iter().map(|(_, at)| *at).max().unwrap_or(t0);
    Ok((lat, t0, last))
}

/// Idle agents; `jobs` enqueues `interval_ms` apart; enqueue-returned → claim-received latency.
/// Every enqueue goes to node 0 while the agents are spread over all nodes: with several nodes,
/// this measures the wake-up of a claim parked on another node.
async fn pickup(
    http: &reqwest::Client,
    server: &Cluster,
    p: &Params,
    deadline: Instant,
) -> Res<Value> {
    let bases = server.bases();
    let ids = seed(http, &bases, p.jobs, p.seed_clients, false, deadline).await?;
    let agents = parked_agents(http, &bases, p.workers, p.jobs, deadline);
    // Let every agent park before the first enqueue (a bounded wait, not a synchronisation).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu0 = server.cpu_mark();
    let interval = Duration::from_millis(p.interval_ms);
    let (lat, _, _) = offer(http, &bases[..1], ids, interval, agents, deadline).await?;
    Ok(json!({
        "jobs": lat.len(),
        "p50_ms": pct(&lat, 0.50),
        "p99_ms": pct(&lat, 0.99),
    })
    .with(server.cpu_since(&cpu0)))
}

/// A fixed offered rate for a fixed time; achieved rate and pickup latency.
async fn steady(
    http: &reqwest::Client,
    server: &Cluster,
    p: &Params,
    deadline: Instant,
) -> Res<Value> {
    let bases = server.bases();
    let n = (p.rate * p.duration_s).round() as usize;
    let ids = seed(http, &bases, n, p.seed_clients, false, deadline).await?;
    let agents = parked_agents(http, &bases, p.workers, n, deadline);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu0 = server.cpu_mark();
    let interval = Duration::from_secs_f64(1.0 / p.rate);
    let (lat, t0, last) = offer(http, &bases, ids, interval, agents, deadline).await?;
    Ok(json!({
        "jobs": lat.len(),
        "offered_per_s": p.rate,
        "jobs_per_s": round2(lat.len() as f64 / last.duration_since(t0).as_secs_f64()),
        "p50_ms": pct(&lat, 0.50),
        "p99_ms": pct(&lat, 0.99),
    })
    .with(server.cpu_since(&cpu0)))
}

/// What the agents saw during the crash workload.
#[derive(Default)]
struct Tally {
    /// Runs whose `complete` was answered 200, with how often.
    acked: HashMap<String, usize>,
    /// `complete` answered 409/404 after its first attempt failed on the connection: the
    /// completion may have committed before the crash (answer lost) or the lease may have been
    /// recovered; the final state decides.
    ambiguous: usize,
    /// `complete` answered 409/404 on a clean first attempt: the lease was recovered.
    lease_lost: usize,
    /// Requests retried after a connection failure.
    retries: usize,
}

/// Retries `url` on connection failures until it gets an HTTP answer. Returns the answer and
/// whether a retry happened.
async fn with_retry(
    http: &reqwest::Client,
    url: &str,
    session: &str,
    body: &Value,
    deadline: Instant,
    tally: &Mutex<Tally>,
) -> Res<(StatusCode, Value, bool)> {
    let mut retried = false;
    loop {
        match send(http, url.to_string(), Some(session), body.clone()).await {
            Ok((s, v)) => return Ok((s, v, retried)),
            Err(e) if Instant::now() > deadline => return Err(format!("{url}: {e}")),
            Err(_) => {
                retried = true;
                tally.lock().unwrap().retries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

const CRASH_LEASE_S: u64 = 5;

/// Burn-down during which the server is SIGKILLed once a third of the jobs are complete and
/// restarted on the same database and address. Agents retry a request whose connection failed
/// (claim-next with the same idempotency key, so a claim committed before the crash comes back);
/// they stop after a long-poll longer than the lease finds nothing, by when every lease taken
/// before the crash has been completed or recovered and requeued. The final state is then read
/// task by task from the timelines. With several nodes only node 0 is killed and restarted; the
/// agents on the other nodes keep working.
async fn crash(
    http: &reqwest::Client,
    server: &mut Cluster,
    p: &Params,
    deadline: Instant,
) -> Res<Value> {
    let bases = server.bases();
    let base = bases[0].clone();
    let ids = seed(http, &bases, p.jobs, p.seed_clients, true, deadline).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::new();
    for w in 0..p.workers {
        let (http, base, tally, done) =
            (http.clone(), node(&bases, w), tally.clone(), done.clone());
        let cap = 4 * p.jobs + 100;
        handles.push(tokio::spawn(async move {
            let session = format!("agent-{w}");
            for k in 0..cap {
                if Instant::now() > deadline {
                    return Err("deadline".to_string());
                }
                let claim_url = format!("{base}/api/agent/tasks/claim-next");
                let body = json!({
                    "idempotency_key": format!("{session}-{k}"),
                    "lease_seconds": CRASH_LEASE_S,
                    "wait": true,
                    "wait_seconds": CRASH_LEASE_S + 2,
                });
                let (status, claim, _) =
                    with_retry(&http, &claim_url, &session, &body, deadline, &tally).await?;
                if status == StatusCode::NO_CONTENT {
                    return Ok(());
                }
                if !status.is_success() {
                    return Err(format!("claim-next: {status} {claim}"));
                }
                let run = claim["claim"]["run"]["id"].as_str().ok_or("no run id")?;
                let url = format!("{base}/api/agent/tasks/{run}/complete");
                let (status, v, retried) =
                    with_retry(&http, &url, &session, &json!({}), deadline, &tally).await?;
                let mut t = tally.lock().unwrap();
                match status {
                    s if s.is_success() => {
                        *t.acked.entry(run.to_string()).or_default() += 1;
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    StatusCode::CONFLICT | StatusCode::NOT_FOUND if retried => t.ambiguous += 1,
                    StatusCode::CONFLICT | StatusCode::NOT_FOUND => t.lease_lost += 1,
                    s => return Err(format!("complete: {s} {v}")),
                }
            }
            Ok(())
        }));
    }
    // Kill once a third is done (bounded wait on a real condition).
    while done.load(Ordering::SeqCst) < p.jobs / 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_kill = done.load(Ordering::SeqCst);
    eprintln!("  SIGKILL after {at_kill} acknowledged completions");
    server.nodes[0].kill9();
    let down = Instant::now();
    server.nodes[0].restart();
    let restart_s = down.elapsed().as_secs_f64();
    join_all(handles).await?;
    let elapsed = started.elapsed().as_secs_f64();

    // Final state: completions per task from each task's timeline.
    let mut completed_runs: HashMap<String, Vec<String>> = HashMap::new();
    for chunk in ids.chunks(64) {
        let mut reads = Vec::new();
        for id in chunk {
            let (http, url) = (
                http.clone(),
                format!("{base}/api/tasks/{id}/timeline?limit=1000"),
            );
            reads.push(tokio::spawn(async move {
                let v: Value = http.get(url).send().await?.json().await?;
                Ok::<_, reqwest::Error>(v)
            }));
        }
        for (id, r) in chunk.iter().zip(reads) {
            let v = r
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let runs = v["timeline"]
                .as_array()
                .ok_or_else(|| format!("timeline of {id}: {v}"))?
                .iter()
                .filter(|e| e["event_type"] == "task.run_completed")
                .map(|e| e["run"]["id"].as_str().unwrap_or("?").to_string())
                .collect();
            completed_runs.insert(id.clone(), runs);
        }
    }
    let t = tally.lock().unwrap();
    let final_runs: HashMap<&str, usize> = completed_runs
        .values()
        .flatten()
        .map(|r| (r.as_str(), 1))
        .collect();
    let lost_tasks = completed_runs.values().filter(|r| r.is_empty()).count();
    let lost_acks = t
        .acked
        .keys()
        .filter(|r| !final_runs.contains_key(r.as_str()))
        .count();
    let dup_tasks = completed_runs.values().filter(|r| r.len() > 1).count();
    let dup_acks = t.acked.values().filter(|&&n| n > 1).count();
    Ok(json!({
        "jobs": ids.len(),
        "jobs_per_s": round2(ids.len() as f64 / elapsed),
        "lost": lost_tasks + lost_acks,
        "duplicated": dup_tasks + dup_acks,
        "crash": {
            "completed_before_kill": at_kill,
            "restart_s": round2(restart_s),
            "acked_completions": t.acked.values().sum::<usize>(),
            "tasks_without_completion": lost_tasks,
            "acked_but_not_completed": lost_acks,
            "tasks_completed_twice": dup_tasks,
            "runs_acked_twice": dup_acks,
            "ambiguous_completes": t.ambiguous,
            "lease_lost_completes": t.lease_lost,
            "retried_requests": t.retries,
        },
    }))
}
