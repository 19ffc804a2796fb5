//! The web console as served by the binary: the page shell at `/`, its assets under `/console/`
//! with their content types and ETags, unknown assets refused, the page public in token mode while
//! the API is not, and `GET /api/whoami` answering the caller's role and rights. (The console's
//! behaviour in a browser is tested by `crates/server/console/e2e`.)
mod common;
mod support_agent;

use common::*;
use support_agent::*;

/// GET `path` with extra headers; status, headers and body text.
async fn fetch(
    srv: &Server,
    path: &str,
    headers: &[(&str, String)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut req = srv.api.client.get(srv.api.url(path));
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let head = resp.headers().clone();
    (status, head, resp.text().await.expect("body"))
}

fn header<'a>(head: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    head.get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

/// The local files a text names: `/console/x` in HTML, `from './x.js'` in a module.
fn references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for part in text.split("/console/").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
            .collect();
        found.push(name);
    }
    for part in text.split("from './").skip(1) {
        found.push(part.split('\'').next().unwrap().to_string());
    }
    found
}

#[tokio::test]
async fn the_shell_and_every_asset_it_loads_are_served_with_their_types() {
    let srv = Server::start();
    let (status, head, html) = fetch(&srv, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&head, "content-type"), "text/html; charset=utf-8");
    assert!(header(&head, "content-security-policy").contains("default-src 'self'"));
    assert!(html.contains("<main id=\"main\""), "{html}");

    // Walk everything the page pulls in, transitively, and check each answer's type.
    let mut queue = references(&html);
    let mut seen = Vec::new();
    while let Some(name) = queue.pop() {
        if seen.contains(&name) {
            continue;
        }
        let (status, head, body) = fetch(&srv, &format!("/console/{name}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "/console/{name}");
        let expected = match name.rsplit('.').next().unwrap() {
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            other => panic!("unexpected asset type {other}"),
        };
        assert_eq!(header(&head, "content-type"), expected, "/console/{name}");
        assert_eq!(header(&head, "x-content-type-options"), "nosniff");
        if name.ends_with(".js") {
            queue.extend(references(&body));
        }
        seen.push(name);
    }
    for module in ["app.js", "api.js", "dom.js", "views.js", "task.js"] {
        assert!(
            seen.iter().any(|s| s == module),
            "{module} not reached: {seen:?}"
        );
    }
}

#[tokio::test]
async fn assets_revalidate_by_etag() {
    let srv = Server::start();
    let (_, head, body) = fetch(&srv, "/console/app.js", &[]).await;
    let etag = header(&head, "etag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(header(&head, "cache-control"), "no-cache");
    assert!(!body.is_empty());

    let (status, head, body) =
        fetch(&srv, "/console/app.js", &[("If-None-Match", etag.clone())]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(header(&head, "etag"), etag);
    assert!(body.is_empty());

    let (status, _, body) = fetch(
        &srv,
        "/console/app.js",
        &[("If-None-Match", "\"other\"".into())],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_empty());
}

#[tokio::test]
async fn unknown_console_paths_are_404_in_the_error_shape() {
    let srv = Server::start();
    for path in [
        "/console/nope.js",
        "/console/",
        "/console/../Cargo.toml",
        "/console/e2e/e2e.mjs",
        "/index.html",
    ] {
        let (status, body) = srv.api.get(path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["code"], "not_found", "{path}");
    }
    let (status, _) = srv.api.post("/", json!({})).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn whoami_in_open_mode_allows_every_console_action() {
    let srv = Server::start();
    let (status, body) = srv.api.get("/api/whoami").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let me = &body["whoami"];
    assert_eq!(me["auth"], "open");
    assert_eq!(me["role"], Value::Null);
    assert_eq!(me["actor"], json!({"kind": "human", "ref": "local-user"}));
    let may = me["may"].as_object().unwrap();
    assert!(may.values().all(|v| v == true), "{may:?}");
}

#[tokio::test]
async fn token_mode_serves_the_page_to_anyone_but_whoami_needs_a_token() {
    let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token")]);
    let (status, _, html) = fetch(&srv, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("/console/app.js"));
    let (status, _, _) = fetch(&srv, "/console/app.js", &[]).await;
    assert_eq!(status, StatusCode::OK);

    let (status, body) = srv.api.get("/api/whoami").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "credentials_required");

    let db = srv.database().to_string();
    let cases = [
        ("operator", "ops", true, true, true),
        ("agent", "bot", false, true, false),
        ("viewer", "watcher", false, false, false),
    ];
    for (role, name, approve, create, cancel_run) in cases {
        let token = create_token(&db, role, name);
        let (status, body) = srv
            .api
            .call(Method::GET, "/api/whoami", None, &bearer(&token))
            .await;
        assert_eq!(status, StatusCode::OK, "{role}: {body}");
        let me = &body["whoami"];
        assert_eq!(me["auth"], "token");
        assert_eq!(me["role"], role);
        assert_eq!(me["may"]["approve_task"], approve, "{role}");
        assert_eq!(me["may"]["reject_task"], approve, "{role}");
        assert_eq!(me["may"]["set_approval_policy"], approve, "{role}");
        assert_eq!(me["may"]["create_task"], create, "{role}");
        assert_eq!(me["may"]["cancel_run"], cancel_run, "{role}");
        assert!(
            !body.to_string().contains(&token),
            "the token is never echoed"
        );
    }
}
