//! Token mode: `tasklane token create|list|revoke`, bearer authentication, the operator /
//! agent / viewer roles, actors recorded per role, tokens created or revoked while the server
//! runs, and the refusal of open mode on a non-loopback address.
mod common;
mod support_agent;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support_agent::*;

fn token_server() -> Server {
    Server::start_with_env(&[("TASKLANE_AUTH", "token")])
}

/// `GET /api/tasks` with the token.
async fn probe(api: &Api, token: &str) -> (StatusCode, Value) {
    api.call(Method::GET, "/api/tasks", None, &bearer(token))
        .await
}

/// Waits (bounded: 3 s, 50 ms steps) until the running server answers `want` for the token.
async fn until_token_status(api: &Api, token: &str, want: u16) -> (StatusCode, Value) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let r = probe(api, token).await;
        if r.0.as_u16() == want {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "token did not reach status {want} within 3 s; last answer {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Tokens {
    operator: String,
    agent: String,
    viewer: String,
}

/// A token-mode server with one token per role (named ops, bot, watcher), all in effect.
async fn server_with_tokens() -> (Server, Tokens) {
    let srv = token_server();
    let db = srv.database().to_string();
    let t = Tokens {
        operator: create_token(&db, "operator", "ops"),
        agent: create_token(&db, "agent", "bot"),
        viewer: create_token(&db, "viewer", "watcher"),
    };
    for tok in [&t.operator, &t.agent, &t.viewer] {
        until_token_status(&srv, tok, 200).await;
    }
    (srv, t)
}

fn assert_no_secret(what: &str, v: &Value, tokens: &Tokens) {
    let text = v.to_string();
    for tok in [&tokens.operator, &tokens.agent, &tokens.viewer] {
        assert!(
            !text.contains(tok.as_str()),
            "{what} leaks an API token: {text}"
        );
    }
}

#[tokio::test]
async fn every_request_needs_a_valid_bearer_token() {
    let (srv, t) = server_with_tokens().await;
    let tid = id(&srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "x"})),
            &bearer(&t.operator),
        )
        .await
        .1["task"]);
    let paths = [
        (Method::GET, "/api/tasks".to_string()),
        (Method::GET, format!("/api/tasks/{tid}")),
        (Method::POST, "/api/tasks".to_string()),
        (Method::POST, CLAIM_NEXT.to_string()),
        (Method::POST, "/api/agent/tasks/run-x/heartbeat".to_string()),
        (Method::GET, "/api/observe/tasks/dashboard".to_string()),
        (Method::GET, "/api/no-such-endpoint".to_string()),
    ];
    let without: Vec<Vec<(&str, String)>> = vec![
        no_headers(),
        // Open-mode identity headers are no credentials in token mode.
        agent("s-1"),
        vec![("Authorization", "Basic b3BzOnNlY3JldA==".to_string())],
        vec![("Authorization", "Bearer".to_string())],
        vec![("Authorization", format!("bearer{}", t.operator))],
    ];
    for (m, p) in &paths {
        for h in &without {
            let r = srv
                .call(
                    m.clone(),
                    p,
                    Some(json!({"scope": "global", "title": "y"})),
                    h,
                )
                .await;
            assert_err(&r, 401, "credentials_required");
        }
        for bad in ["not-a-token", &format!("{}x", t.operator), &t.operator[1..]] {
            let r = srv
                .call(
                    m.clone(),
                    p,
                    Some(json!({"scope": "global", "title": "y"})),
                    &bearer(bad),
                )
                .await;
            assert_err(&r, 401, "invalid_token");
        }
    }
    // Nothing was created by the refused requests.
    let (s, v) = probe(&srv, &t.operator).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["tasks"].as_array().unwrap().len(), 1, "{v}");
}

#[tokio::test]
async fn operators_run_the_task_api_as_humans_but_not_the_agent_api() {
    let (srv, t) = server_with_tokens().await;
    let op = bearer(&t.operator);
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "by ops", "approval_policy": "manual"})),
            &op,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_no_secret("create", &v, &t);
    let tid = id(&v["task"]);
    assert_eq!(v["task"]["created_by"], owner("human", "ops"), "{v}");
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/tasks/{tid}/approve"),
            Some(json!({})),
            &op,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "operators approve: {v}");
    let (s, v) = srv
        .call(Method::GET, &format!("/api/tasks/{tid}"), None, &op)
        .await;
    assert_eq!(s, StatusCode::OK);
    let approved = v["task"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "task.approved")
        .cloned()
        .unwrap_or_else(|| panic!("no task.approved event: {v}"));
    assert_eq!(approved["actor"], owner("human", "ops"), "{approved}");
    assert_eq!(approved["origin"], http_origin("approve"), "{approved}");

    // The agent API is not for operators, with or without a session header.
    for headers in [op.clone(), bearer_as(&t.operator, "s-ops")] {
        let r = claim_next_with(&srv, &headers, json!({})).await;
        assert_err(&r, 403, "forbidden_role");
        let r = srv
            .call(
                Method::POST,
                "/api/agent/tasks/run-x/complete",
                Some(json!({})),
                &headers,
            )
            .await;
        assert_err(&r, 403, "forbidden_role");
    }
}

#[tokio::test]
async fn agents_claim_and_write_tasks_but_never_approve() {
    let (srv, t) = server_with_tokens().await;
    let op = bearer(&t.operator);
    let ag = bearer_as(&t.agent, "sess-7");

    // Task writes are allowed, recorded as the agent session.
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "by agent"})),
            &ag,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid = id(&v["task"]);
    assert_eq!(v["task"]["created_by"], session_actor("sess-7"), "{v}");
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/tasks/{tid}/runs"),
            Some(json!({"idempotency_key": "agent-enqueue-1"})),
            &ag,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rid = id(&v["run"]);

    // The agent API: claim, heartbeat, complete.
    let c = expect_claim("sess-7", claim_next_with(&srv, &ag, json!({})).await);
    assert_eq!(run_of(&c), rid);
    assert_no_secret("claim", &json!(c), &t);
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/agent/tasks/{rid}/heartbeat"),
            Some(json!({})),
            &ag,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/agent/tasks/{rid}/complete"),
            Some(json!({})),
            &ag,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Reads are allowed.
    let (s, v) = srv
        .call(Method::GET, &format!("/api/tasks/{tid}"), None, &ag)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let claimed = v["task"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_type"] == "task.run_claimed")
        .cloned()
        .unwrap();
    assert_eq!(claimed["actor"], session_actor("sess-7"), "{claimed}");

    // A worker can never approve or reject work.
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "gated", "approval_policy": "manual"})),
            &op,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let gated = id(&v["task"]);
    for action in ["approve", "reject"] {
        let r = srv
            .call(
                Method::POST,
                &format!("/api/tasks/{gated}/{action}"),
                Some(json!({})),
                &ag,
            )
            .await;
        assert_err(&r, 403, "forbidden_role");
    }
    let (_, v) = srv
        .call(Method::GET, &format!("/api/tasks/{gated}"), None, &op)
        .await;
    assert_eq!(v["task"]["task"]["approval_state"], "pending", "{v}");
}

#[tokio::test]
async fn an_agent_token_without_a_session_header_acts_as_its_name() {
    let (srv, t) = server_with_tokens().await;
    let op = bearer(&t.operator);
    let (_, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "work"})),
            &op,
        )
        .await;
    let tid = id(&v["task"]);
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/tasks/{tid}/runs"),
            Some(json!({})),
            &op,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let rid = id(&v["run"]);
    let c = expect_claim(
        "bot",
        claim_next_with(&srv, &bearer(&t.agent), json!({})).await,
    );
    assert_eq!(run_of(&c), rid);
    assert_eq!(c["run"]["claimed_by"], session_actor("bot"));
    // Another session of the same token is a different session: it may not touch bot's lease.
    let r = srv
        .call(
            Method::POST,
            &format!("/api/agent/tasks/{rid}/complete"),
            Some(json!({})),
            &bearer_as(&t.agent, "other-session"),
        )
        .await;
    assert_err(&r, 409, "no_active_lease");
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/agent/tasks/{rid}/complete"),
            Some(json!({})),
            &bearer(&t.agent),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn viewers_only_read() {
    let (srv, t) = server_with_tokens().await;
    let (_, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "visible"})),
            &bearer(&t.operator),
        )
        .await;
    let tid = id(&v["task"]);
    let view = bearer(&t.viewer);
    for path in [
        "/api/tasks".to_string(),
        format!("/api/tasks/{tid}"),
        format!("/api/tasks/{tid}/runs"),
        format!("/api/tasks/{tid}/timeline"),
    ] {
        let (s, v) = srv.call(Method::GET, &path, None, &view).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
    }
    let writes = [
        (
            Method::POST,
            "/api/tasks".to_string(),
            json!({"scope": "global", "title": "no"}),
        ),
        (
            Method::PATCH,
            format!("/api/tasks/{tid}"),
            json!({"title": "renamed"}),
        ),
        (Method::POST, format!("/api/tasks/{tid}/runs"), json!({})),
        (Method::POST, format!("/api/tasks/{tid}/start"), json!({})),
        (Method::POST, format!("/api/tasks/{tid}/cancel"), json!({})),
        (Method::POST, format!("/api/tasks/{tid}/approve"), json!({})),
        (Method::DELETE, format!("/api/tasks/{tid}"), json!({})),
    ];
    for (m, path, body) in writes {
        let r = srv.call(m.clone(), &path, Some(body), &view).await;
        assert_err(&r, 403, "forbidden_role");
    }
    for headers in [view.clone(), bearer_as(&t.viewer, "s-view")] {
        let r = claim_next_with(&srv, &headers, json!({})).await;
        assert_err(&r, 403, "forbidden_role");
    }
    // Nothing changed.
    let (_, v) = srv
        .call(Method::GET, &format!("/api/tasks/{tid}"), None, &view)
        .await;
    assert_eq!(v["task"]["task"]["title"], "visible", "{v}");
    assert_eq!(v["task"]["task"]["status"], "ready", "{v}");
}

#[tokio::test]
async fn tokens_created_or_revoked_while_running_take_effect() {
    let (srv, t) = server_with_tokens().await;
    let db = srv.database().to_string();
    // A new token starts working.
    let late = create_token(&db, "agent", "late-bot");
    until_token_status(&srv, &late, 200).await;
    // A revoked token stops working, with the token's own error code.
    let out = token_cli(&db, &["revoke", "bot"]);
    assert!(
        out.status.success(),
        "revoke: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = until_token_status(&srv, &t.agent, 401).await;
    assert_err(&r, 401, "invalid_token");
    // The others are unaffected.
    assert_eq!(probe(&srv, &t.operator).await.0, StatusCode::OK);
    assert_eq!(probe(&srv, &late).await.0, StatusCode::OK);
    // The name is free again and the new token is a different secret.
    let again = create_token(&db, "agent", "bot");
    assert_ne!(again, t.agent);
    until_token_status(&srv, &again, 200).await;
    assert_eq!(probe(&srv, &t.agent).await.0.as_u16(), 401);
}

#[tokio::test]
async fn the_token_cli_shows_names_roles_and_use_but_never_secrets() {
    let (srv, t) = server_with_tokens().await;
    let db = srv.database().to_string();
    let list = |db: &str| {
        let out = token_cli(db, &["list"]);
        assert!(
            out.status.success(),
            "token list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        for tok in [&t.operator, &t.agent, &t.viewer] {
            assert!(
                !stdout.contains(tok.as_str()),
                "list shows a secret: {stdout}"
            );
            assert!(
                !stderr.contains(tok.as_str()),
                "list shows a secret: {stderr}"
            );
            // Not even the hash of a secret belongs in the listing.
            assert!(!stdout.contains("sha256"), "list shows hashes: {stdout}");
        }
        stdout
    };
    let out = list(&db);
    for (name, role) in [("ops", "operator"), ("bot", "agent"), ("watcher", "viewer")] {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"));
        assert!(line.contains(role), "{name} has role {role}: {line}");
    }

    // Bad input: no token printed, non-zero exit.
    for args in [
        vec!["create", "--role", "admin", "--name", "x"],
        vec!["create", "--role", "agent", "--name", "has space"],
        vec!["create", "--role", "agent", "--name", "bot"],
        vec!["revoke", "nobody"],
    ] {
        let out = token_cli(&db, &args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            String::from_utf8_lossy(&out.stdout).trim().is_empty(),
            "{args:?} printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // The duplicate create did not replace bot's token.
    assert_eq!(probe(&srv, &t.agent).await.0, StatusCode::OK);

    // Using a token is recorded: the listing's last-use column changes from what it was.
    let before = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("watcher"))
        .unwrap()
        .to_string();
    create_token(&db, "viewer", "unused");
    let unused = list(&db)
        .lines()
        .find(|l| l.split_whitespace().next() == Some("unused"))
        .unwrap()
        .to_string();
    assert!(
        unused.contains("never"),
        "an unused token was never used: {unused}"
    );
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        // `watcher` was used by server_with_tokens; the server records use in the background.
        let now = list(&db);
        let line = now
            .lines()
            .find(|l| l.split_whitespace().next() == Some("watcher"))
            .unwrap()
            .to_string();
        if line != before || !before.contains("never") {
            assert!(!line.contains("never"), "watcher was used: {line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "last use of a token never recorded: {line}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Listen addresses
// ---------------------------------------------------------------------------------------------

/// A server process started by this test; killed when dropped.
struct OwnServer(Child);

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve_command(dir: &std::path::Path, listen: &str, auth: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tasklane"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--database")
        .arg(format!("sqlite://{}", dir.join("tasklane.db").display()))
        .env("RUST_LOG", "warn")
        .env_remove("TASKLANE_AUTH")
        .env_remove("TASKLANE_TEST_CLOCK")
        .env_remove("TASKLANE_LISTEN")
        .env_remove("TASKLANE_DATABASE_URL")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(a) = auth {
        cmd.arg("--auth").arg(a);
    }
    cmd
}

#[test]
fn open_mode_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let child = serve_command(dir.path(), listen, None).spawn().unwrap();
        let mut child = OwnServer(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "open mode on {listen} must refuse to start, but the server kept running"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!status.success(), "{listen}: exit status {status:?}");
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let mut stdout = String::new();
        std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
        assert!(
            !stdout.contains("listening"),
            "{listen}: it must not have served: {stdout}"
        );
        assert!(
            stderr.contains("non-loopback") && stderr.contains("--auth token"),
            "{listen}: the refusal explains itself: {stderr}"
        );
    }
}

#[tokio::test]
async fn token_mode_may_listen_on_every_interface() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tasklane.db").display());
    let child = serve_command(dir.path(), "0.0.0.0:0", Some("token"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = OwnServer(child);
    let stdout = child.0.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("tasklane listening on http://")
        .unwrap_or_else(|| panic!("unexpected start-up line {line:?}"));
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 0);
    // Traffic goes to loopback only.
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let r = api.call(Method::GET, "/api/tasks", None, &[]).await;
    assert_err(&r, 401, "credentials_required");
    let r = api
        .call(Method::POST, CLAIM_NEXT, None, &agent("s-1"))
        .await;
    assert_err(&r, 401, "credentials_required");
    let tok = create_token(&db, "viewer", "remote-viewer");
    until_token_status(&api, &tok, 200).await;
}

/// A queued run of a new task in workspace `ws` (operator token): (task, run).
async fn queued_in(srv: &Server, operator: &str, ws: &str) -> (String, String) {
    let op = bearer(operator);
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "workspace", "workspace": ws, "title": ws})),
            &op,
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let tid = id(&v["task"]);
    let (s, v) = srv
        .call(Method::POST, &format!("/api/tasks/{tid}/start"), None, &op)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (tid, id(&v["run"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_namespaced_by_the_token_that_acts() {
    let (srv, t) = server_with_tokens().await;
    let db = srv.database().to_string();
    let alpha = create_token(&db, "agent", "pool-alpha");
    let beta = create_token(&db, "agent", "pool-beta");
    until_token_status(&srv, &alpha, 200).await;
    until_token_status(&srv, &beta, 200).await;
    let (a, b) = (bearer_as(&alpha, "x"), bearer_as(&beta, "x"));
    let (ta, ra) = queued_in(&srv, &t.operator, "wa").await;
    let (tb, rb) = queued_in(&srv, &t.operator, "wb").await;
    let mut errors = Vec::new();

    // alpha uses session x first; beta's x is another session, with its own lease.
    let c = expect_claim(
        "x",
        claim_next_with(&srv, &a, json!({"workspace_id": "wa"})).await,
    );
    assert_eq!(run_of(&c), ra);
    for action in ["heartbeat", "complete", "release"] {
        let r = srv
            .call(
                Method::POST,
                &format!("/api/agent/tasks/{ra}/{action}"),
                Some(json!({})),
                &b,
            )
            .await;
        assert_err(&r, 409, "no_active_lease");
        errors.push(r.1);
    }
    let c = expect_claim(
        "x",
        claim_next_with(&srv, &b, json!({"workspace_id": "wb"})).await,
    );
    assert_eq!(run_of(&c), rb);
    // Each holds one lease; neither may act on the other's.
    for (who, other) in [(&a, &rb), (&b, &ra)] {
        let r = srv
            .call(
                Method::POST,
                &format!("/api/agent/tasks/{other}/complete"),
                Some(json!({})),
                who,
            )
            .await;
        assert_err(&r, 403, "foreign_run");
        errors.push(r.1);
        let r = claim_next_with(&srv, who, json!({})).await;
        assert_err(&r, 409, "lease_held");
        errors.push(r.1);
    }
    for text in errors.iter().map(Value::to_string) {
        assert!(
            !text.contains("pool-alpha") && !text.contains("pool-beta"),
            "an error names a token: {text}"
        );
    }

    // On the wire, both sessions are the session id their client sent.
    let op = bearer(&t.operator);
    for (tid, rid) in [(&ta, &ra), (&tb, &rb)] {
        let (_, v) = srv
            .call(Method::GET, &format!("/api/task-runs/{rid}"), None, &op)
            .await;
        assert_eq!(v["run"]["run"]["session_id"], "x", "{v}");
        assert_eq!(v["run"]["session"]["session_id"], "x", "{v}");
        assert_eq!(v["run"]["session"]["state"], "active", "{v}");
        let (_, v) = srv
            .call(Method::GET, &format!("/api/tasks/{tid}"), None, &op)
            .await;
        let claimed = v["task"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_type"] == "task.run_claimed")
            .cloned()
            .unwrap();
        assert_eq!(claimed["actor"], session_actor("x"), "{claimed}");
    }
    for (who, rid) in [(&a, &ra), (&b, &rb)] {
        let (s, v) = srv
            .call(
                Method::POST,
                &format!("/api/agent/tasks/{rid}/complete"),
                Some(json!({})),
                who,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_token_works_on_its_very_first_request() {
    let (srv, _) = server_with_tokens().await;
    let db = srv.database().to_string();
    // The server refreshes its token cache every second: without a lookup on a miss, one of
    // these first requests would land before the refresh.
    for n in 0..5 {
        for role in ["operator", "agent", "viewer"] {
            let token = create_token(&db, role, &format!("fresh-{role}-{n}"));
            let (s, v) = probe(&srv, &token).await;
            assert_eq!(s, StatusCode::OK, "{role} token {n}: {v}");
        }
    }
}

/// Revokes a token through the CLI.
fn revoke(db: &str, name: &str) {
    let out = token_cli(db, &["revoke", name]);
    assert!(
        out.status.success(),
        "revoke {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Opens the task's SSE stream and reads its first bytes, so it is live.
async fn open_stream(srv: &Server, tid: &str, token: &str) -> reqwest::Response {
    let mut resp = srv
        .client
        .get(srv.url(&format!("/api/tasks/{tid}/stream")))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("open stream");
    assert_eq!(resp.status(), StatusCode::OK);
    let first = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
        .await
        .expect("first bytes of the stream")
        .expect("read stream")
        .expect("stream open");
    assert!(String::from_utf8_lossy(&first).starts_with("retry:"));
    resp
}

/// Reads until the stream ends; panics if it is still open after `secs`. Returns what it read.
async fn until_stream_ends(resp: &mut reqwest::Response, secs: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut read = String::new();
    loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => panic!("the stream is still open after {secs} s; read {read:?}"),
            Ok(Ok(Some(bytes))) => read.push_str(&String::from_utf8_lossy(&bytes)),
            Ok(Ok(None)) | Ok(Err(_)) => return read,
        }
    }
}

/// Reads until a frame of `event` arrives (bounded).
async fn until_event(resp: &mut reqwest::Response, event: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut read = String::new();
    while !read.contains(&format!("event: {event}\n")) {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(bytes))) => read.push_str(&String::from_utf8_lossy(&bytes)),
            other => panic!("no {event} frame ({other:?}); read {read:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_token_ends_its_open_streams() {
    let (srv, t) = server_with_tokens().await;
    let db = srv.database().to_string();
    let op = bearer(&t.operator);
    let (_, v) = srv
        .call(
            Method::POST,
            "/api/tasks",
            Some(json!({"scope": "global", "title": "watched"})),
            &op,
        )
        .await;
    let tid = id(&v["task"]);
    let mut revoked = open_stream(&srv, &tid, &t.viewer).await;
    let mut kept = open_stream(&srv, &tid, &t.operator).await;

    revoke(&db, "watcher");
    until_stream_ends(&mut revoked, 10).await;

    // Other tokens' streams go on.
    let (s, v) = srv
        .call(
            Method::PATCH,
            &format!("/api/tasks/{tid}"),
            Some(json!({"title": "still watched"})),
            &op,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    until_event(&mut kept, "task.updated").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_token_answers_its_parked_claims_with_401() {
    let (srv, t) = server_with_tokens().await;
    let db = srv.database().to_string();
    let keeper = create_token(&db, "agent", "keeper");
    until_token_status(&srv, &keeper, 200).await;
    let op = bearer(&t.operator);

    // A probe run shows when bot's session last called the API.
    let (_, probe_run) = queued_in(&srv, &t.operator, "probe").await;
    let bot = bearer_as(&t.agent, "parked");
    expect_claim(
        "parked",
        claim_next_with(&srv, &bot, json!({"workspace_id": "probe"})).await,
    );
    let (s, v) = srv
        .call(
            Method::POST,
            &format!("/api/agent/tasks/{probe_run}/complete"),
            Some(json!({})),
            &bot,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let last_seen = || async {
        let (_, v) = srv
            .call(
                Method::GET,
                &format!("/api/task-runs/{probe_run}"),
                None,
                &op,
            )
            .await;
        str_of(&v["run"]["session"], "updated_at")
    };
    let before = last_seen().await;

    let park = |headers: Vec<(&'static str, String)>| {
        let api = srv.api.clone();
        let body = json!({"wait": true, "wait_seconds": 120, "workspace_id": "work"});
        tokio::spawn(async move { claim_next_with(&api, &headers, body).await })
    };
    let parked = park(bot);
    // Parked once its first attempt has touched the session (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !parked.is_finished() && micros(&last_seen().await) <= micros(&before) {
        assert!(
            Instant::now() < deadline,
            "the claim never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kept = park(bearer_as(&keeper, "keeper-1"));

    revoke(&db, "bot");
    let r = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("the parked claim of a revoked token must answer within 10 s")
        .unwrap();
    assert_err(&r, 401, "invalid_token");

    // Other tokens' parked claims still get the work.
    let (_, rid) = queued_in(&srv, &t.operator, "work").await;
    let r = tokio::time::timeout(Duration::from_secs(10), kept)
        .await
        .expect("the other token's claim is answered")
        .unwrap();
    assert_eq!(run_of(&expect_claim("keeper-1", r)), rid);
}
