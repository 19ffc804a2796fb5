//! Helpers for the agent-protocol suites (`agent_*.rs`, `auth_tokens.rs`): a manual-clock server,
//! claim-next and the fenced lease operations, timestamps, and the token CLI.
//!
//! Test files declare `mod common; mod support_agent;` and `use support_agent::*;`.
#![allow(dead_code)]

use std::process::{Command, Output};

use crate::common::*;

// ---------------------------------------------------------------------------------------------
// Servers and the manual clock
// ---------------------------------------------------------------------------------------------

/// A server on the manual clock: time only moves through [`advance`].
pub fn clock_server() -> Server {
    Server::start_with_env(&[("TASKLANE_TEST_CLOCK", "true")])
}

/// A manual-clock server with extra environment (e.g. `TASKLANE_MAX_LEASE_EXPIRATIONS`).
pub fn clock_server_with(env: &[(&str, &str)]) -> Server {
    let mut all = vec![("TASKLANE_TEST_CLOCK", "true")];
    all.extend_from_slice(env);
    Server::start_with_env(&all)
}

/// `POST /api/_test/clock/advance`: moves the clock and recovers what expired; returns the body
/// `{now, recovered_leases}`.
pub async fn advance_as(api: &Api, seconds: f64, headers: &[(&str, String)]) -> Value {
    let (s, v) = api
        .call(
            Method::POST,
            "/api/_test/clock/advance",
            Some(json!({ "seconds": seconds })),
            headers,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "advance clock {seconds}: {v}");
    assert!(v["now"].is_string(), "advance answers `now`: {v}");
    assert!(
        v["recovered_leases"].is_u64(),
        "advance answers `recovered_leases`: {v}"
    );
    v
}

pub async fn advance(api: &Api, seconds: f64) -> Value {
    advance_as(api, seconds, &[]).await
}

/// Recovered-lease count of an advance.
pub async fn advance_recovering(api: &Api, seconds: f64) -> u64 {
    advance(api, seconds).await["recovered_leases"]
        .as_u64()
        .unwrap()
}

/// The manual clock's current time, in microseconds since the epoch.
pub async fn clock_now(api: &Api) -> i64 {
    micros(&str_of(&advance(api, 0.0).await, "now"))
}

// ---------------------------------------------------------------------------------------------
// Identity headers
// ---------------------------------------------------------------------------------------------

/// `X-AGH-Session-ID: sid` and `X-AGH-Agent: name`.
pub fn agent_named(sid: &str, name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-AGH-Session-ID", sid.to_string()),
        ("X-AGH-Agent", name.to_string()),
    ]
}

pub fn session_actor(sid: &str) -> Value {
    owner("agent_session", sid)
}

// ---------------------------------------------------------------------------------------------
// Agent protocol calls
// ---------------------------------------------------------------------------------------------

pub const CLAIM_NEXT: &str = "/api/agent/tasks/claim-next";

/// `POST /api/agent/tasks/claim-next` with arbitrary headers.
pub async fn claim_next_with(
    api: &Api,
    headers: &[(&str, String)],
    body: Value,
) -> (StatusCode, Value) {
    api.call(Method::POST, CLAIM_NEXT, Some(body), headers)
        .await
}

/// claim-next as session `sid`.
pub async fn claim_next(api: &Api, sid: &str, body: Value) -> (StatusCode, Value) {
    claim_next_with(api, &agent(sid), body).await
}

/// claim-next as `sid`, asserting 200; checks the claim's shape and returns `claim`.
#[track_caller]
pub fn expect_claim(sid: &str, resp: (StatusCode, Value)) -> Value {
    let (s, v) = resp;
    assert_eq!(
        s,
        StatusCode::OK,
        "claim-next as {sid}: expected 200, got {s}: {v}"
    );
    let claim = v["claim"].clone();
    assert!(claim.is_object(), "200 carries `claim`: {v}");
    check_claim_shape(sid, &claim);
    claim
}

/// Asserts the invariants of a fresh claim held by `sid`.
#[track_caller]
pub fn check_claim_shape(sid: &str, claim: &Value) {
    let run = &claim["run"];
    let lease = &claim["lease"];
    assert!(claim["task"].is_object(), "claim.task: {claim}");
    assert_eq!(run["status"], "claimed", "claim.run.status: {claim}");
    assert_eq!(lease["status"], "claimed", "claim.lease.status: {claim}");
    assert_eq!(lease["run_id"], run["id"], "lease.run_id = run.id: {claim}");
    assert_eq!(
        lease["task_id"], claim["task"]["id"],
        "lease.task_id: {claim}"
    );
    assert_eq!(run["task_id"], claim["task"]["id"], "run.task_id: {claim}");
    assert_eq!(lease["session_id"], sid, "lease.session_id: {claim}");
    assert_eq!(run["session_id"], sid, "run.session_id: {claim}");
    assert_eq!(
        lease["claimed_by"],
        session_actor(sid),
        "lease.claimed_by: {claim}"
    );
    assert_eq!(
        run["claimed_by"],
        session_actor(sid),
        "run.claimed_by: {claim}"
    );
    let hash = str_of(lease, "claim_token_hash");
    assert!(
        is_claim_hash(&hash),
        "claim_token_hash must be sha256:<64 hex>: {hash}"
    );
    assert_eq!(
        run["claim_token_hash"], lease["claim_token_hash"],
        "{claim}"
    );
    let until = str_of(lease, "lease_until");
    assert!(
        is_micros_utc(&until),
        "lease_until is RFC 3339 micros: {until}"
    );
    assert_eq!(run["lease_until"], lease["lease_until"], "{claim}");
}

/// claim-next as `sid` expecting a claim.
pub async fn claim(api: &Api, sid: &str, body: Value) -> Value {
    expect_claim(sid, claim_next(api, sid, body).await)
}

/// claim-next as `sid` expecting 204 with an empty body.
#[track_caller]
pub fn expect_nothing(sid: &str, resp: (StatusCode, Value)) {
    let (s, v) = resp;
    assert_eq!(
        s,
        StatusCode::NO_CONTENT,
        "claim-next as {sid}: expected 204, got {s}: {v}"
    );
    assert!(v.is_null(), "204 has an empty body: {v}");
}

pub async fn claim_nothing(api: &Api, sid: &str, body: Value) {
    expect_nothing(sid, claim_next(api, sid, body).await)
}

/// `POST /api/agent/tasks/{run_id}/{op}` as `sid`.
pub async fn lease_op(
    api: &Api,
    sid: &str,
    run_id: &str,
    op: &str,
    body: Value,
) -> (StatusCode, Value) {
    api.call(
        Method::POST,
        &format!("/api/agent/tasks/{run_id}/{op}"),
        Some(body),
        &agent(sid),
    )
    .await
}

/// A lease operation expected to answer 200; returns the `lease`.
pub async fn lease_ok(api: &Api, sid: &str, run_id: &str, op: &str, body: Value) -> Value {
    let (s, v) = lease_op(api, sid, run_id, op, body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{op} {run_id} as {sid} {body}: {v}");
    assert!(v["lease"].is_object(), "{op} answers {{lease}}: {v}");
    assert_eq!(v["lease"]["run_id"], run_id, "{v}");
    v["lease"].clone()
}

/// Creates a global task (extra fields merged) and enqueues a run; returns (task id, run id).
pub async fn queued(api: &Api, title: &str, extra: Value) -> (String, String) {
    let task = id(&api.task_with(title, extra).await);
    let run = id(&api.enqueue(&task).await);
    (task, run)
}

/// The run's status as `GET /api/task-runs/{id}` shows it.
pub async fn run_status(api: &Api, run_id: &str) -> String {
    str_of(&api.get_run(run_id).await, "status")
}

/// `claim.run.id`.
pub fn run_of(claim: &Value) -> String {
    id(&claim["run"])
}

pub fn hash_of(claim: &Value) -> String {
    str_of(&claim["lease"], "claim_token_hash")
}

/// `sha256:` + 64 lowercase hex digits.
pub fn is_claim_hash(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// The events of `event_type` for `run_id`, oldest first.
pub async fn run_events(api: &Api, task_id: &str, event_type: &str) -> Vec<Value> {
    api.events(task_id)
        .await
        .into_iter()
        .filter(|e| e["event_type"] == event_type)
        .collect()
}

/// The only event of `event_type` of the task.
pub async fn the_event(api: &Api, task_id: &str, event_type: &str) -> Value {
    let events = api.events(task_id).await;
    only_event(&events, event_type).clone()
}

// ---------------------------------------------------------------------------------------------
// Timestamps
// ---------------------------------------------------------------------------------------------

/// Microseconds since the Unix epoch of `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
#[track_caller]
pub fn micros(ts: &str) -> i64 {
    #[track_caller]
    fn bad(ts: &str) -> ! {
        panic!("not an RFC 3339 UTC timestamp: {ts:?}")
    }
    let s = ts.strip_suffix('Z').unwrap_or_else(|| bad(ts));
    let (date, time) = s.split_once('T').unwrap_or_else(|| bad(ts));
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().unwrap_or_else(|_| bad(ts)))
        .collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().unwrap_or_else(|_| bad(ts)))
        .collect();
    if d.len() != 3 || t.len() != 3 || frac.len() > 9 {
        bad(ts);
    }
    let mut frac_micros = 0i64;
    for (i, c) in frac.chars().take(6).enumerate() {
        let digit = c.to_digit(10).unwrap_or_else(|| bad(ts)) as i64;
        frac_micros += digit * 10i64.pow(5 - i as u32);
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0], d[1], d[2]);
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) * 1_000_000) + frac_micros
}

pub const SECOND: i64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Token CLI
// ---------------------------------------------------------------------------------------------

/// Runs `tasklane token <args> --database <db>`; returns its output.
pub fn token_cli(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tasklane"))
        .arg("token")
        .args(args)
        .arg("--database")
        .arg(db)
        .env("RUST_LOG", "warn")
        .env_remove("TASKLANE_DATABASE_URL")
        .output()
        .expect("run tasklane token")
}

/// `tasklane token create --role <role> --name <name>`; returns the token (the only stdout line).
pub fn create_token(db: &str, role: &str, name: &str) -> String {
    let out = token_cli(db, &["create", "--role", role, "--name", name]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "token create {role} {name} failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "token create prints only the token: {stdout:?}"
    );
    let token = lines[0].trim().to_string();
    assert!(
        token.len() >= 32 && !token.contains(char::is_whitespace),
        "token looks like a random secret: {token:?}"
    );
    token
}

pub fn bearer(token: &str) -> Vec<(&'static str, String)> {
    vec![("Authorization", format!("Bearer {token}"))]
}

/// `Authorization: Bearer <token>` plus `X-AGH-Session-ID: sid`.
pub fn bearer_as(token: &str, sid: &str) -> Vec<(&'static str, String)> {
    let mut h = bearer(token);
    h.push(("X-AGH-Session-ID", sid.to_string()));
    h
}

// ---------------------------------------------------------------------------------------------
// Long polls
// ---------------------------------------------------------------------------------------------

/// Makes session `sid` observable: it claims and completes a probe run of its own, so the run
/// detail of the probe shows when `sid` last called the API. Call it before creating other work
/// the session could claim. Returns the probe run id.
pub async fn probe_session(api: &Api, sid: &str) -> String {
    let (_, rid) = queued(
        api,
        &format!("probe for {sid}"),
        json!({"owner": {"kind": "agent_session", "ref": sid}, "priority": "urgent"}),
    )
    .await;
    let c = claim(api, sid, json!({})).await;
    assert_eq!(run_of(&c), rid, "the probe run is claimed by its session");
    lease_ok(api, sid, &rid, "complete", json!({})).await;
    rid
}

/// When the session of `probe_run` last called the API (microseconds).
pub async fn last_seen(api: &Api, probe_run: &str) -> i64 {
    let (s, v) = api.get(&format!("/api/task-runs/{probe_run}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    micros(&str_of(&v["run"]["session"], "updated_at"))
}

pub type Waiter = tokio::task::JoinHandle<(StatusCode, Value)>;

/// Spawns a long-polling claim-next (`wait: true` merged into `body`) as `sid`.
pub fn spawn_waiter(api: &Api, sid: &str, body: Value) -> Waiter {
    let api = api.clone();
    let sid = sid.to_string();
    let mut body = body;
    merge(&mut body, json!({"wait": true}));
    tokio::spawn(async move { claim_next(&api, &sid, body).await })
}

/// Spawns a long-polling claim-next as `sid` (whose probe run is `probe_run`, see
/// [`probe_session`]) on a manual-clock server, and returns once the server has made the waiter's
/// first claim attempt — so it is parked (or already answered). The clock is moved 1 s so that the
/// attempt's touch of the session is visible; the wait for it is bounded.
pub async fn parked_waiter(api: &Api, sid: &str, probe_run: &str, body: Value) -> Waiter {
    let now = micros(&str_of(&advance(api, 1.0).await, "now"));
    assert!(last_seen(api, probe_run).await < now);
    let waiter = spawn_waiter(api, sid, body);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !waiter.is_finished() && last_seen(api, probe_run).await < now {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting claim of {sid} never reached the server"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    waiter
}

/// Awaits a waiter (bounded by `secs`, well above its wait_seconds) and returns its answer.
pub async fn answer(waiter: Waiter, secs: u64) -> (StatusCode, Value) {
    tokio::time::timeout(std::time::Duration::from_secs(secs), waiter)
        .await
        .unwrap_or_else(|_| panic!("the waiting claim did not answer within {secs} s"))
        .expect("waiter task")
}
