//! The HTTP layer against hostile clients: browser pages in open mode (cross-site writes, DNS
//! rebinding), idle and slow connections, too many connections, and requests malformed at every
//! layer — each answered in the error shape, or closed, but never left hanging.
mod common;
use common::*;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on every wait for a real condition (a response, a closed socket).
const DEADLINE: Duration = Duration::from_secs(30);

/// `host:port` of the server.
fn addr(srv: &Server) -> String {
    srv.base_url().trim_start_matches("http://").to_string()
}

fn port(srv: &Server) -> String {
    addr(srv).rsplit_once(':').unwrap().1.to_string()
}

/// One response read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    /// Header lines, lowercased.
    head: String,
    body: Value,
}

/// Parses the first response in `bytes` if it is complete (its body by `content-length`).
fn parse_response(bytes: &[u8]) -> Option<Raw> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let body = bytes.get(end + 4..end + 4 + length)?;
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    Some(Raw { status, head, body })
}

/// Reads one response off `conn` (which stays open), within the deadline.
async fn read_response(conn: &mut TcpStream) -> Raw {
    let mut bytes = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(raw) = parse_response(&bytes) {
                return raw;
            }
            let mut buf = [0u8; 16384];
            let n = conn.read(&mut buf).await.expect("read response");
            assert!(
                n > 0,
                "connection closed before a full response: {:?}",
                String::from_utf8_lossy(&bytes)
            );
            bytes.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response within the deadline")
}

/// Sends `request` on a new connection and reads the response.
async fn exchange(srv: &Server, request: &[u8]) -> Raw {
    let mut conn = TcpStream::connect(addr(srv)).await.expect("connect");
    conn.write_all(request).await.expect("send request");
    read_response(&mut conn).await
}

/// Sends a request with the given extra header lines and body on a new connection.
async fn send(srv: &Server, method: &str, path: &str, headers: &[String], body: &str) -> Raw {
    exchange(srv, &request(method, path, headers, body)).await
}

/// A request with the given extra header lines and body.
fn request(method: &str, path: &str, headers: &[String], body: &str) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    r.into_bytes()
}

/// Waits until the server closes `conn` (EOF or reset) and returns what it sent before.
async fn closed_by_server(conn: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server did not close the connection within the deadline");
    seen
}

/// Reads `conn` until `needle` has arrived, within the deadline.
async fn read_until(conn: &mut TcpStream, needle: &str) {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains(needle) {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    assert_eq!(
        found,
        Ok(true),
        "{needle:?} not received before the deadline or the close; got {}",
        String::from_utf8_lossy(&seen)
    );
}

#[track_caller]
fn assert_raw(raw: &Raw, status: u16, code: &str) {
    assert_eq!(raw.status, status, "{raw:?}");
    assert_eq!(raw.body["code"], code, "{raw:?}");
    assert!(
        raw.body["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{raw:?}"
    );
    assert!(
        raw.head.contains("content-type: application/json"),
        "{raw:?}"
    );
}

const TASK: &str = r#"{"scope":"global","title":"from a web page"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn open_mode_refuses_cross_site_writes_and_foreign_hosts() {
    let srv = Server::start();
    let port = port(&srv);
    let own = format!("Host: 127.0.0.1:{port}");
    let plain = "Content-Type: text/plain".to_string();

    // A page on evil.example posting a "simple" request, directly or after rebinding its name.
    let refused: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                format!("Host: evil.example:{port}"),
                "Origin: http://evil.example".into(),
                plain.clone(),
            ],
            "host_not_allowed",
        ),
        (
            vec![
                own.clone(),
                "Origin: http://evil.example".into(),
                plain.clone(),
            ],
            "cross_site_request",
        ),
        (
            vec![
                own.clone(),
                format!("Origin: http://localhost:{}", 1),
                plain.clone(),
            ],
            "cross_site_request",
        ),
        (
            vec![own.clone(), "Origin: null".into(), plain.clone()],
            "cross_site_request",
        ),
        (
            vec![
                own.clone(),
                "Sec-Fetch-Site: cross-site".into(),
                plain.clone(),
            ],
            "cross_site_request",
        ),
    ];
    for (headers, code) in &refused {
        let raw = send(&srv, "POST", "/api/tasks", headers, TASK).await;
        assert_raw(&raw, 403, code);
    }
    let raw = send(
        &srv,
        "DELETE",
        "/api/tasks/x",
        &[own.clone(), "Origin: http://evil.example".into()],
        "",
    )
    .await;
    assert_raw(&raw, 403, "cross_site_request");
    assert!(
        srv.list("").await.is_empty(),
        "a refused write created a task"
    );

    // A rebinding page reading: refused by the Host check, streams included.
    let tid = srv.task("secret").await;
    for path in ["/api/tasks".to_string(), format!("/api/tasks/{tid}/stream")] {
        let raw = send(
            &srv,
            "GET",
            &path,
            &[format!("Host: evil.example:{port}")],
            "",
        )
        .await;
        assert_raw(&raw, 403, "host_not_allowed");
    }

    // Same-origin pages and non-browser clients keep working.
    let allowed: Vec<Vec<String>> = vec![
        vec![own.clone()],
        vec![own.clone(), format!("Origin: http://127.0.0.1:{port}")],
        vec![
            format!("Host: localhost:{port}"),
            format!("Origin: http://localhost:{port}"),
            "Sec-Fetch-Site: same-origin".into(),
            plain.clone(),
        ],
    ];
    for headers in &allowed {
        let raw = send(&srv, "POST", "/api/tasks", headers, TASK).await;
        assert_eq!(raw.status, 201, "{headers:?}: {raw:?}");
    }
    srv.create_task(json!({"scope": "global", "title": "curl"}))
        .await;
    // A cross-site read cannot be read by the page; it is answered like any read.
    let raw = send(
        &srv,
        "GET",
        "/api/tasks",
        &[own.clone(), "Origin: http://evil.example".into()],
        "",
    )
    .await;
    assert_eq!(raw.status, 200, "{raw:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_origins_and_hosts_are_allowed() {
    let srv = Server::start_with_env(&[
        (
            "TASKLANE_ALLOWED_ORIGINS",
            "http://app.example:3000,https://ui.example",
        ),
        ("TASKLANE_ALLOWED_HOSTS", "tasks.internal"),
    ]);
    let host = format!("Host: tasks.internal:{}", port(&srv));
    for origin in ["http://app.example:3000", "https://ui.example"] {
        let headers = [host.clone(), format!("Origin: {origin}")];
        let raw = send(&srv, "POST", "/api/tasks", &headers, TASK).await;
        assert_eq!(raw.status, 201, "{origin}: {raw:?}");
    }
    let headers = [host.clone(), "Origin: http://app.example:3001".into()];
    let raw = send(&srv, "POST", "/api/tasks", &headers, TASK).await;
    assert_raw(&raw, 403, "cross_site_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn token_mode_leaves_the_host_to_the_deployment() {
    // Behind a load balancer any name may reach the server; a browser never sends the token.
    let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token")]);
    let headers = [
        "Host: tasks.example.com".into(),
        "Origin: http://evil.example".into(),
    ];
    let raw = send(&srv, "POST", "/api/tasks", &headers, TASK).await;
    assert_raw(&raw, 401, "credentials_required");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_connections_are_closed() {
    let srv = Server::start_with_env(&[
        ("TASKLANE_HEADER_TIMEOUT", "1"),
        ("TASKLANE_IDLE_TIMEOUT", "1"),
    ]);
    // Connected, never a byte.
    let mut silent = TcpStream::connect(addr(&srv)).await.unwrap();
    // A request head trickling in and never finished (slowloris).
    let mut slow = TcpStream::connect(addr(&srv)).await.unwrap();
    slow.write_all(b"GET /api/tasks HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // A kept-alive connection after its request.
    let mut kept = TcpStream::connect(addr(&srv)).await.unwrap();
    kept.write_all(&request(
        "GET",
        "/api/tasks",
        &["Host: localhost".into()],
        "",
    ))
    .await
    .unwrap();
    assert_eq!(read_response(&mut kept).await.status, 200);

    assert!(closed_by_server(&mut silent).await.is_empty());
    assert!(closed_by_server(&mut slow).await.is_empty());
    assert!(closed_by_server(&mut kept).await.is_empty());
    assert_eq!(srv.get("/api/tasks").await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn long_polls_and_streams_outlive_the_timeouts() {
    let srv = Server::start_with_env(&[
        ("TASKLANE_HEADER_TIMEOUT", "1"),
        ("TASKLANE_IDLE_TIMEOUT", "1"),
    ]);
    let tid = srv.task("watched").await;
    let mut stream = TcpStream::connect(addr(&srv)).await.unwrap();
    stream
        .write_all(
            format!("GET /api/tasks/{tid}/stream HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    read_until(&mut stream, "task.created").await;

    // A long poll silent for three times the timeouts is answered, not cut.
    let (s, v) = srv
        .call(
            Method::POST,
            "/api/agent/tasks/claim-next",
            Some(json!({"wait": true, "wait_seconds": 3, "required_capabilities": ["none-such"]})),
            &agent("s-1"),
        )
        .await;
    assert_eq!(s.as_u16(), 204, "{v}");

    // The stream, silent as long, still delivers.
    let (s, v) = srv
        .call(
            Method::PATCH,
            &format!("/api/tasks/{tid}"),
            Some(json!({"title": "renamed"})),
            &[],
        )
        .await;
    assert_eq!(s.as_u16(), 200, "{v}");
    read_until(&mut stream, "task.updated").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let srv = Server::start_with_env(&[("TASKLANE_MAX_CONNECTIONS", "2")]);
    let get = request("GET", "/api/tasks", &["Host: localhost".into()], "");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = TcpStream::connect(addr(&srv)).await.unwrap();
        conn.write_all(&get).await.unwrap();
        assert_eq!(read_response(&mut conn).await.status, 200);
        held.push(conn);
    }
    let mut third = TcpStream::connect(addr(&srv)).await.unwrap();
    third.write_all(&get).await.unwrap();
    let mut buf = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "a connection over the cap was served while both slots were held"
    );
    drop(held.pop());
    assert_eq!(read_response(&mut third).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_clients_cannot_exhaust_the_descriptors() {
    // 300 idle connections against 256 descriptors: without a cap and timeouts the server runs out
    // of descriptors and never accepts the real client.
    let srv = Server::start_with(&[("TASKLANE_HEADER_TIMEOUT", "1")], Some(256));
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr(&srv)).await.unwrap());
    }
    let (s, v) = srv.get("/api/tasks").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let log = srv.log();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.contains("lowered to fit the open-file limit"), "{log}");
}

/// method, path, extra headers, body, expected status and code.
type Case = (
    &'static str,
    String,
    Vec<String>,
    &'static str,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread")]
async fn every_layer_answers_errors_in_the_error_shape() {
    let srv = Server::start();
    let tid = srv.task("t").await;
    let host = "Host: localhost".to_string();
    let session = "X-AGH-Session-ID: s-1".to_string();
    let cases: Vec<Case> = vec![
        // Path segments that are not UTF-8 once decoded.
        (
            "GET",
            "/api/tasks/%FF%FE".into(),
            vec![],
            "",
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/api/task-runs/%C3%28".into(),
            vec![],
            "",
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/api/tasks/%FF/timeline".into(),
            vec![],
            "",
            400,
            "invalid_path",
        ),
        (
            "GET",
            "/api/tasks/%FF/stream".into(),
            vec![],
            "",
            400,
            "invalid_path",
        ),
        (
            "DELETE",
            format!("/api/tasks/{tid}/dependencies/%FF"),
            vec![],
            "",
            400,
            "invalid_path",
        ),
        (
            "POST",
            "/api/agent/tasks/%FF/heartbeat".into(),
            vec![session.clone()],
            "{}",
            400,
            "invalid_path",
        ),
        // Query values that are not UTF-8.
        (
            "GET",
            "/api/tasks?status=%FF".into(),
            vec![],
            "",
            422,
            "validation_failed",
        ),
        // Bodies.
        (
            "POST",
            "/api/tasks".into(),
            vec![],
            "{",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/api/tasks".into(),
            vec![],
            "[]",
            400,
            "invalid_json",
        ),
        // The router.
        ("GET", "/nowhere".into(), vec![], "", 404, "not_found"),
        ("GET", "/api/nope".into(), vec![], "", 404, "not_found"),
        (
            "PUT",
            "/api/tasks".into(),
            vec![],
            "",
            405,
            "method_not_allowed",
        ),
        (
            "OPTIONS",
            "/api/tasks".into(),
            vec![],
            "",
            405,
            "method_not_allowed",
        ),
        (
            "BREW",
            format!("/api/tasks/{tid}"),
            vec![],
            "",
            405,
            "method_not_allowed",
        ),
        // Authentication and the browser guard.
        (
            "POST",
            "/api/agent/tasks/claim-next".into(),
            vec![],
            "{}",
            401,
            "identity_required",
        ),
        (
            "GET",
            "/api/tasks".into(),
            vec!["Host: evil.example".into()],
            "",
            403,
            "host_not_allowed",
        ),
    ];
    for (method, path, mut headers, body, status, code) in cases {
        if !headers.iter().any(|h| h.starts_with("Host:")) {
            headers.push(host.clone());
        }
        let raw = send(&srv, method, &path, &headers, body).await;
        assert_eq!(raw.status, status, "{method} {path}: {raw:?}");
        assert_raw(&raw, status, code);
    }

    // Broken chunked framing.
    let raw = exchange(
        &srv,
        b"POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    )
    .await;
    assert_raw(&raw, 400, "invalid_body");

    // Bytes that are not HTTP are answered by the HTTP parser before any of Tasklane's code runs:
    // a bare 400 and a closed connection (see README, Errors).
    let mut conn = TcpStream::connect(addr(&srv)).await.unwrap();
    conn.write_all(b"GET /api/tasks HTTP/1.1\r\nHost: localhost\r\nX-Bad: a\x01b\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_by_server(&mut conn).await;
    let raw = parse_response(&answer).expect("a response before the close");
    assert_eq!(raw.status, 400, "{raw:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_headers_that_are_not_short_text_are_refused() {
    let srv = Server::start();
    // Bytes that are not UTF-8: ignoring the header would make the caller the local operator.
    let raw = exchange(
        &srv,
        b"POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nX-AGH-Session-ID: \xff\xfe\r\n\
          Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    assert_raw(&raw, 422, "validation_failed");
    let host = "Host: localhost".to_string();
    for identity in [
        format!("X-AGH-Session-ID: {}", "s".repeat(257)),
        format!("X-AGH-Session-ID: s-1\r\nX-AGH-Agent: {}", "a".repeat(257)),
    ] {
        let raw = send(
            &srv,
            "POST",
            "/api/agent/tasks/claim-next",
            &[host.clone(), identity],
            "{}",
        )
        .await;
        assert_raw(&raw, 422, "validation_failed");
    }
    // 256 bytes, and text beyond ASCII, are fine.
    let raw = send(
        &srv,
        "POST",
        "/api/agent/tasks/claim-next",
        &[host, format!("X-AGH-Session-ID: {}", "s".repeat(256))],
        "{}",
    )
    .await;
    assert_eq!(raw.status, 204, "{raw:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stops_arriving_is_408() {
    let srv = Server::start_with_env(&[("TASKLANE_BODY_TIMEOUT", "1")]);
    let mut conn = TcpStream::connect(addr(&srv)).await.unwrap();
    conn.write_all(b"POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let raw = read_response(&mut conn).await;
    assert_raw(&raw, 408, "request_timeout");
    assert!(raw.head.contains("connection: close"), "{raw:?}");
    assert!(srv.list("").await.is_empty());
}
