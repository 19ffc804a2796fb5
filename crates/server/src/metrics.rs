//! `/metrics` in the Prometheus text format.
//!
//! Events (requests, lease expirations, claim waits, writer batches) are recorded as they happen
//! through the `metrics` facade into the Prometheus recorder, which this process installs once.
//! Levels that storage already knows (the queue, active leases, the WAL) are read at scrape time
//! instead, from indexes and counter tables, so they are exact and cost nothing between scrapes.
//!
//! Every label set is bounded: requests are labelled by route template (`/api/tasks/{id}`, never
//! the raw path), method and status; the queue by priority and by the busiest workspaces
//! (`monitor::TOP_WORKSPACES`, the rest summed as `(other)`).

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tasklane_core::service::agent::Recovered;
use tasklane_store::monitor::{QueueStat, Workspace};

use crate::error::ApiResult;
use crate::state::AppState;

const REQUESTS: &str = "tasklane_http_requests_total";
const REQUEST_SECONDS: &str = "tasklane_http_request_duration_seconds";
const LEASE_EXPIRATIONS: &str = "tasklane_lease_expirations_total";
const POISON_FAILURES: &str = "tasklane_poison_failures_total";
const CLAIM_WAIT: &str = "tasklane_claim_wait_seconds";
const PARKED_CLAIMERS: &str = "tasklane_parked_claimers";
const SSE_SUBSCRIBERS: &str = "tasklane_sse_subscribers";
const BATCH_SIZE: &str = "tasklane_writer_batch_size";
const COMMIT_SECONDS: &str = "tasklane_writer_commit_seconds";
const WRITER_RERUNS: &str = "tasklane_writer_reruns_total";

/// Latency buckets, from a fast read to the longest long poll (300 s).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];
/// Commands per group commit, up to the writer's largest batch.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

const PRIORITIES: [&str; 4] = ["low", "medium", "high", "urgent"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and keeps its histograms drained.
pub fn install() {
    let mut fresh = false;
    HANDLE.get_or_init(|| {
        fresh = true;
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS))
            .expect("metric buckets are not empty")
            .install_recorder()
            .expect("the metrics recorder is installed once per process");
        describe();
        handle
    });
    if fresh {
        tokio::spawn(async {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                if let Some(handle) = HANDLE.get() {
                    handle.run_upkeep();
                }
            }
        });
    }
}

/// HELP texts, and a zero for the families a scrape should show before anything happened.
fn describe() {
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        REQUEST_SECONDS,
        "Time to answer an HTTP request (until the response head), by method, route and status"
    );
    describe_counter!(
        LEASE_EXPIRATIONS,
        "Runs whose lease expired and that went back to the queue"
    );
    describe_counter!(
        POISON_FAILURES,
        "Runs failed because their lease expired --max-lease-expirations times"
    );
    describe_histogram!(
        CLAIM_WAIT,
        "Time a claim-next or claim-batch with wait=true spent parked waiting for work"
    );
    describe_gauge!(
        PARKED_CLAIMERS,
        "claim-next and claim-batch requests parked waiting for work"
    );
    describe_gauge!(SSE_SUBSCRIBERS, "Open event streams");
    describe_histogram!(
        BATCH_SIZE,
        "Write operations committed per group-commit transaction"
    );
    describe_histogram!(
        COMMIT_SECONDS,
        "Time of one group commit (COMMIT with fsync)"
    );
    describe_counter!(
        WRITER_RERUNS,
        "SQLite transactions rolled back and run again, each command in its own savepoint, \
         because a command without one failed after writing"
    );
    counter!(LEASE_EXPIRATIONS).absolute(0);
    counter!(POISON_FAILURES).absolute(0);
    counter!(WRITER_RERUNS).absolute(0);
    gauge!(PARKED_CLAIMERS).set(0.0);
    gauge!(SSE_SUBSCRIBERS).set(0.0);
}

/// Middleware: counts and times every request by route template, method and status.
pub async fn track_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    counter!(REQUESTS, &labels).increment(1);
    histogram!(REQUEST_SECONDS, &labels).record(started.elapsed());
    response
}

/// The methods Tasklane serves, and `other` for the rest, so a client cannot invent labels.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pub fn leases_recovered(recovered: Recovered) {
    counter!(LEASE_EXPIRATIONS).increment(recovered.requeued as u64);
    counter!(POISON_FAILURES).increment(recovered.failed as u64);
}

pub fn sse_subscribed() {
    gauge!(SSE_SUBSCRIBERS).increment(1.0);
}

pub fn sse_unsubscribed() {
    gauge!(SSE_SUBSCRIBERS).decrement(1.0);
}

/// A claim-next or claim-batch parked waiting for work: counted while it lives; its whole wait is recorded when
/// it ends, however the request ends.
pub struct Parked {
    since: Instant,
}

impl Parked {
    pub fn start() -> Parked {
        gauge!(PARKED_CLAIMERS).increment(1.0);
        Parked {
            since: Instant::now(),
        }
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        gauge!(PARKED_CLAIMERS).decrement(1.0);
        histogram!(CLAIM_WAIT).record(self.since.elapsed());
    }
}

/// `GET /metrics`.
pub async fn endpoint(State(state): State<AppState>) -> ApiResult<Response> {
    let text = render(&state).await?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

async fn render(state: &AppState) -> ApiResult<String> {
    let gauges = state.store.queue_gauges().await?;
    let now = state.clock.now().micros();
    let mut out = HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    let age = |stat: &QueueStat| {
        stat.oldest_queued_at
            .map_or(0.0, |at| (now - at).max(0) as f64 / 1e6)
    };

    family(&mut out, "tasklane_queue_depth", "Queued runs, by priority");
    for (name, stat) in PRIORITIES.iter().zip(&gauges.by_priority) {
        sample(
            &mut out,
            "tasklane_queue_depth",
            &[("priority", name)],
            stat.depth as f64,
        );
    }
    family(
        &mut out,
        "tasklane_queue_oldest_age_seconds",
        "Age of the oldest queued run, by priority (0 when none is queued)",
    );
    for (name, stat) in PRIORITIES.iter().zip(&gauges.by_priority) {
        sample(
            &mut out,
            "tasklane_queue_oldest_age_seconds",
            &[("priority", name)],
            age(stat),
        );
    }
    family(
        &mut out,
        "tasklane_queue_depth_by_workspace",
        "Queued runs, by workspace: the busiest by name, (global) for global tasks, (other) for the rest",
    );
    for (ws, stat) in &gauges.by_workspace {
        let label = workspace_label(ws);
        sample(
            &mut out,
            "tasklane_queue_depth_by_workspace",
            &[("workspace", label)],
            stat.depth as f64,
        );
    }
    family(
        &mut out,
        "tasklane_queue_oldest_age_by_workspace_seconds",
        "Age of the oldest queued run, by workspace label as in tasklane_queue_depth_by_workspace",
    );
    for (ws, stat) in &gauges.by_workspace {
        let label = workspace_label(ws);
        sample(
            &mut out,
            "tasklane_queue_oldest_age_by_workspace_seconds",
            &[("workspace", label)],
            age(stat),
        );
    }
    family(
        &mut out,
        "tasklane_active_leases",
        "Claimed, starting or running runs holding a lease",
    );
    sample(
        &mut out,
        "tasklane_active_leases",
        &[],
        gauges.active_leases as f64,
    );
    family(
        &mut out,
        "tasklane_writer_queue_length",
        "Write operations waiting for the writer",
    );
    sample(
        &mut out,
        "tasklane_writer_queue_length",
        &[],
        state.store.queued_writes() as f64,
    );
    if let Some(wal_bytes) = state.store.wal_bytes() {
        family(
            &mut out,
            "tasklane_wal_bytes",
            "Size of the SQLite write-ahead log file",
        );
        sample(&mut out, "tasklane_wal_bytes", &[], wal_bytes as f64);
    }
    Ok(out)
}

fn workspace_label(ws: &Workspace) -> &str {
    // Workspace ids are [A-Za-z0-9._:/-], so the parenthesised names cannot collide with one.
    match ws {
        Workspace::Global => "(global)",
        Workspace::Named(name) => name,
        Workspace::Other => "(other)",
    }
}

fn family(out: &mut String, name: &str, help: &str) {
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` alone on `listener`, without authentication (`--metrics-listen`), until the
/// server shuts down.
pub fn serve_alone(listener: tokio::net::TcpListener, state: AppState) {
    let mut stopping = state.shutting_down.subscribe();
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(endpoint))
        .with_state(state);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopping.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
}
