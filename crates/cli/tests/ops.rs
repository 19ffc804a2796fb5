//! Operating a server: health and readiness probes, Prometheus metrics (open mode, token mode and
//! `--metrics-listen`), request ids, JSON logs without secrets, and online backups.
mod common;
mod support_agent;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use support_agent::*;

const DEADLINE: Duration = Duration::from_secs(10);

/// The families `/metrics` shows once the server has answered a request.
const FAMILIES: &[&str] = &[
    "tasklane_http_requests_total",
    "tasklane_http_request_duration_seconds",
    "tasklane_queue_depth",
    "tasklane_queue_oldest_age_seconds",
    "tasklane_queue_depth_by_workspace",
    "tasklane_queue_oldest_age_by_workspace_seconds",
    "tasklane_active_leases",
    "tasklane_lease_expirations_total",
    "tasklane_poison_failures_total",
    "tasklane_parked_claimers",
    "tasklane_sse_subscribers",
    "tasklane_writer_batch_size",
    "tasklane_writer_commit_seconds",
    "tasklane_writer_reruns_total",
    "tasklane_writer_queue_length",
    "tasklane_wal_bytes",
];

/// The families this backend exports: PostgreSQL has no write-ahead log file of Tasklane's.
fn families() -> impl Iterator<Item = &'static &'static str> {
    FAMILIES
        .iter()
        .filter(|f| !(on_postgres() && **f == "tasklane_wal_bytes"))
}

async fn metrics_as(api: &Api, headers: &[(&str, String)]) -> String {
    let (s, v) = api.call(Method::GET, "/metrics", None, headers).await;
    assert_eq!(s, StatusCode::OK, "GET /metrics: {v}");
    v.as_str().expect("metrics are text").to_string()
}

async fn metrics(api: &Api) -> String {
    metrics_as(api, &[]).await
}

/// The value of one series, written as in the text format: `name` or `name{a="x",b="y"}`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a sample value"))
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Polls `/metrics` until `series` has `want`, within a bounded time.
async fn until_metric(api: &Api, series: &str, want: f64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let text = metrics(api).await;
        if sample(&text, series) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn families_of(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_answer_without_credentials() {
    let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token")]);
    let (s, v) = srv.get("/healthz").await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({"status": "ok"})));
    let (s, v) = srv.get("/readyz").await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({"status": "ready"})));
    let (s, _) = srv.get("/api/tasks").await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the API itself still needs a token"
    );

    if on_postgres() {
        return; // the rest removes the SQLite file
    }
    // A database file removed under the running server: alive, but not ready.
    std::fs::remove_file(srv.dir().join("tasklane.db")).unwrap();
    let (s, v) = srv.get("/readyz").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["code"], "not_ready");
    // The cause stays in the log: anyone may probe.
    assert_eq!(v["error"], "the database is not ready", "{v}");
    let (s, _) = srv.get("/healthz").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_name_their_families_and_move_with_the_work() {
    // A short keepalive: a stream's closed connection is noticed at its next write at the latest.
    let srv = clock_server_with(&[
        ("TASKLANE_MAX_LEASE_EXPIRATIONS", "2"),
        ("TASKLANE_SSE_KEEPALIVE_MS", "100"),
    ]);
    // Request families appear with the first request answered.
    srv.get("/healthz").await;
    let text = metrics(&srv).await;
    for family in families() {
        assert!(
            families_of(&text).contains(family),
            "no {family} in:\n{text}"
        );
    }
    assert_eq!(value(&text, "tasklane_active_leases"), 0.0);

    // Requests are counted by route template, never by raw path.
    let created = r#"tasklane_http_requests_total{method="POST",route="/api/tasks",status="201"}"#;
    let before = sample(&text, created).unwrap_or(0.0);
    let (tid, rid) = queued(&srv, "urgent work", json!({"priority": "urgent"})).await;
    srv.get(&format!("/api/tasks/{tid}")).await;
    let text = metrics(&srv).await;
    assert_eq!(value(&text, created), before + 1.0);
    assert_eq!(
        value(
            &text,
            r#"tasklane_http_requests_total{method="GET",route="/api/tasks/{id}",status="200"}"#
        ),
        1.0
    );
    assert!(!text.contains(&tid), "a raw path became a label");
    assert_eq!(
        value(&text, r#"tasklane_queue_depth{priority="urgent"}"#),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"tasklane_queue_depth_by_workspace{workspace="(global)"}"#
        ),
        1.0
    );
    advance(&srv, 30.0).await;
    let text = metrics(&srv).await;
    assert_eq!(
        value(
            &text,
            r#"tasklane_queue_oldest_age_seconds{priority="urgent"}"#
        ),
        30.0
    );

    // A claim holds a lease; its expiry requeues the run, the second expiry fails it (poison).
    let claim = expect_claim(
        "w1",
        claim_next(&srv, "w1", json!({"lease_seconds": 10})).await,
    );
    assert_eq!(run_of(&claim), rid);
    let text = metrics(&srv).await;
    assert_eq!(value(&text, "tasklane_active_leases"), 1.0);
    assert_eq!(
        value(&text, r#"tasklane_queue_depth{priority="urgent"}"#),
        0.0
    );
    advance(&srv, 11.0).await;
    let text = metrics(&srv).await;
    assert_eq!(value(&text, "tasklane_lease_expirations_total"), 1.0);
    assert_eq!(value(&text, "tasklane_active_leases"), 0.0);
    expect_claim(
        "w1",
        claim_next(&srv, "w1", json!({"lease_seconds": 10})).await,
    );
    advance(&srv, 11.0).await;
    let text = metrics(&srv).await;
    assert_eq!(value(&text, "tasklane_poison_failures_total"), 1.0);
    assert_eq!(value(&text, "tasklane_lease_expirations_total"), 1.0);
    assert!(value(&text, "tasklane_writer_batch_size_count") > 0.0);
    assert!(value(&text, "tasklane_writer_commit_seconds_count") > 0.0);
    if !on_postgres() {
        assert!(value(&text, "tasklane_wal_bytes") > 0.0);
    }

    // A parked claimer is counted while it waits; its wait is recorded when it ends.
    let waiter = spawn_waiter(&srv, "w2", json!({"wait_seconds": 60}));
    until_metric(&srv, "tasklane_parked_claimers", 1.0).await;
    queued(&srv, "for the waiter", json!({})).await;
    let (s, _) = answer(waiter, 30).await;
    assert_eq!(s, StatusCode::OK);
    let text = metrics(&srv).await;
    assert_eq!(value(&text, "tasklane_parked_claimers"), 0.0);
    assert_eq!(value(&text, "tasklane_claim_wait_seconds_count"), 1.0);

    // An open event stream is a subscriber until it closes.
    let stream = srv
        .client
        .get(srv.url(&format!("/api/tasks/{tid}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    until_metric(&srv, "tasklane_sse_subscribers", 1.0).await;
    drop(stream);
    until_metric(&srv, "tasklane_sse_subscribers", 0.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workspace_label_set_is_bounded() {
    let srv = Server::start();
    // 25 workspaces with one queued run each, and "busy" with three: the 20 busiest are named.
    for n in 0..25 {
        let ws = format!("ws-{n:02}");
        queued(&srv, &ws, json!({"scope": "workspace", "workspace": ws})).await;
    }
    for _ in 0..3 {
        queued(
            &srv,
            "busy",
            json!({"scope": "workspace", "workspace": "busy"}),
        )
        .await;
    }
    let text = metrics(&srv).await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("tasklane_queue_depth_by_workspace{"))
        .collect();
    assert_eq!(
        series.len(),
        21,
        "20 named and (other):\n{}",
        series.join("\n")
    );
    assert_eq!(
        value(
            &text,
            r#"tasklane_queue_depth_by_workspace{workspace="busy"}"#
        ),
        3.0
    );
    // The ties are broken by name: ws-00 .. ws-18 named, ws-19 .. ws-24 summed.
    assert_eq!(
        value(
            &text,
            r#"tasklane_queue_depth_by_workspace{workspace="(other)"}"#
        ),
        6.0
    );
    let total: f64 = series
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(total, 28.0);
    for label in ["busy", "ws-00", "(other)"] {
        let age =
            format!(r#"tasklane_queue_oldest_age_by_workspace_seconds{{workspace="{label}"}}"#);
        assert!(value(&text, &age) >= 0.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_mode_metrics_need_a_viewer_or_operator_token() {
    let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token")]);
    let db = srv.database().to_string();
    let viewer = create_token(&db, "viewer", "prometheus");
    let agent = create_token(&db, "agent", "worker");
    let (s, v) = srv.get("/metrics").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["code"], "credentials_required");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (s, v) = srv
            .call(Method::GET, "/metrics", None, &bearer(&viewer))
            .await;
        if s == StatusCode::OK {
            assert!(v.as_str().unwrap().contains("tasklane_queue_depth"));
            break;
        }
        assert!(Instant::now() < deadline, "viewer never accepted: {s} {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = srv
        .call(Method::GET, "/metrics", None, &bearer(&agent))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], "forbidden_role");
}

/// The address of the metrics listener, from the server's second stdout line.
async fn metrics_address(srv: &Server) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(line) = srv
            .extra_stdout_lines()
            .iter()
            .find_map(|l| l.strip_prefix("tasklane metrics on "))
        {
            return line.trim().to_string();
        }
        assert!(Instant::now() < deadline, "no metrics line on stdout");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_listen_serves_metrics_alone_without_credentials() {
    let srv = Server::start_with_env(&[
        ("TASKLANE_AUTH", "token"),
        ("TASKLANE_METRICS_LISTEN", "127.0.0.1:0"),
    ]);
    let url = metrics_address(&srv).await;
    srv.get("/healthz").await;
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    let resp = srv.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    for family in families() {
        assert!(
            families_of(&text).contains(family),
            "no {family} in:\n{text}"
        );
    }
    // Only /metrics lives there, and the API no longer serves it.
    let other = url.replace("/metrics", "/api/tasks");
    let resp = srv.client.get(&other).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let db = srv.database().to_string();
    let viewer = create_token(&db, "viewer", "watcher");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (s, v) = srv
            .call(Method::GET, "/metrics", None, &bearer(&viewer))
            .await;
        if s == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
        assert!(Instant::now() < deadline, "viewer never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn request_id(api: &Api, sent: Option<&str>) -> String {
    let mut req = api.client.get(api.url("/healthz"));
    if let Some(id) = sent {
        req = req.header("X-Request-Id", id);
    }
    let resp = req.send().await.unwrap();
    resp.headers()
        .get("x-request-id")
        .expect("every answer carries X-Request-Id")
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_echoed_when_well_formed_and_generated_otherwise() {
    let srv = Server::start();
    assert_eq!(
        request_id(&srv, Some("proxy-7f3a.42")).await,
        "proxy-7f3a.42"
    );
    let generated = [
        request_id(&srv, None).await,
        request_id(&srv, None).await,
        request_id(&srv, Some(&"x".repeat(129))).await,
        request_id(&srv, Some("two words")).await,
    ];
    for id in &generated {
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    }
    assert_ne!(generated[0], generated[1]);
    // Errors carry it too, refused requests included.
    let resp = srv
        .client
        .post(srv.url("/api/tasks"))
        .header("Origin", "http://evil.example")
        .header("X-Request-Id", "refused-1")
        .json(&json!({"scope": "global", "title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(resp.headers()["x-request-id"], "refused-1");
}

/// Complete lines of the server log (a line being written is left out).
fn log_lines(srv: &Server) -> Vec<String> {
    let log = srv.log();
    let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_parse_and_carry_the_request_id() {
    let srv = Server::start_with_env(&[
        ("TASKLANE_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,tasklane_server=debug"),
    ]);
    let resp = srv
        .client
        .post(srv.url("/api/tasks"))
        .header("X-Request-Id", "trace-me-1")
        .json(&json!({"scope": "global", "title": "logged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let lines = log_lines(&srv);
        let parsed: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        assert!(
            parsed
                .iter()
                .any(|v| v["fields"]["message"] == "tasklane serving"),
            "start-up is logged as JSON too"
        );
        let mine: Vec<&Value> = parsed
            .iter()
            .filter(|v| v["span"]["request_id"] == "trace-me-1")
            .collect();
        if let Some(line) = mine.iter().find(|v| v["fields"]["message"] == "answered") {
            assert_eq!(line["fields"]["status"], 201, "{line}");
            assert_eq!(line["span"]["method"], "POST", "{line}");
            assert_eq!(line["span"]["path"], "/api/tasks", "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line of the request:\n{lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_token_appears_in_the_logs() {
    let srv = Server::start_with_env(&[
        ("TASKLANE_AUTH", "token"),
        ("TASKLANE_LOG_FORMAT", "json"),
        ("RUST_LOG", "trace"),
    ]);
    let db = srv.database().to_string();
    let operator = create_token(&db, "operator", "ops");
    let agent = create_token(&db, "agent", "bot");
    let deadline = Instant::now() + DEADLINE;
    while srv
        .call(Method::GET, "/api/tasks", None, &bearer(&agent))
        .await
        .0
        != StatusCode::OK
    {
        assert!(Instant::now() < deadline, "token never accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "secret work"})),
            &bearer(&operator),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid = id(&v["task"]);
    let (s, _) = srv
        .call(
            Method::POST,
            &format!("/api/tasks/{tid}/start"),
            Some(json!({})),
            &bearer(&operator),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let claim = expect_claim(
        "s1",
        claim_next_with(&srv, &bearer_as(&agent, "s1"), json!({})).await,
    );
    let rid = run_of(&claim);
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/agent/tasks/{rid}/complete"),
            Some(json!({"result": {"ok": true}})),
            &bearer_as(&agent, "s1"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let bogus = "tl_this-is-not-a-real-token-0123456789";
    let (s, _) = srv
        .call(Method::GET, "/api/tasks", None, &bearer(bogus))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // The request that finished last has logged its answer once its line is complete.
    let resp = srv
        .client
        .get(srv.url("/healthz"))
        .header("X-Request-Id", "last-one")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let deadline = Instant::now() + DEADLINE;
    while !log_lines(&srv)
        .iter()
        .any(|l| l.contains("last-one") && l.contains("answered"))
    {
        assert!(Instant::now() < deadline, "no log of the last request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = srv.log();
    assert!(log.contains("request_id"), "sanity: requests were logged");
    for secret in [&operator, &agent, &bogus.to_string()] {
        assert!(!log.contains(secret.as_str()), "a token is in the log");
    }
    assert!(
        !log.to_ascii_lowercase().contains("bearer "),
        "an Authorization header is in the log"
    );
}

fn backup_cli(db: &str, dest: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .arg("backup")
        .arg(dest)
        .arg("--database")
        .arg(db)
        .env("RUST_LOG", "warn")
        .env_remove("TASKLANE_DATABASE_URL")
        .output()
        .expect("run tasklane backup")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_the_server_runs_opens_and_holds_the_tasks() {
    if on_postgres() {
        return; // `tasklane backup` copies SQLite files; PostgreSQL has its own tools
    }
    let srv = Server::start();
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(srv.task(&format!("task {n}")).await);
    }
    let (_, rid) = queued(&srv, "with a run", json!({})).await;
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("copy.db");
    let out = backup_cli(srv.database(), &dest);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup failed: {stdout}\n{stderr}");
    assert!(stdout.contains("21 tasks, 1 runs"), "summary: {stdout}");
    assert!(stderr.contains("backing up"), "progress: {stderr}");
    // The server kept serving writes while and after the copy was taken.
    srv.task("after the backup").await;

    // A second backup never overwrites the first.
    let size = std::fs::metadata(&dest).unwrap().len();
    let out = backup_cli(srv.database(), &dest);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), size);
    let leftovers: Vec<_> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("copy.db")]);

    // Restore: a server started on the copy has every task of the moment of the backup.
    let mut restored = Server::start();
    restored.kill9();
    let db = restored.dir().join("tasklane.db");
    for f in ["tasklane.db-wal", "tasklane.db-shm"] {
        let _ = std::fs::remove_file(restored.dir().join(f));
    }
    std::fs::copy(&dest, &db).unwrap();
    restored.restart();
    for id in &ids {
        assert_eq!(restored.status_of(id).await, "ready");
    }
    assert_eq!(run_status(&restored, &rid).await, "queued");
    assert_eq!(restored.list_all_ids("").await.len(), 21);
}
