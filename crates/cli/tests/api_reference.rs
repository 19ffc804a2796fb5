//! The API describes itself: `GET /openapi.json` (OpenAPI 3.1) and the rendered reference at
//! `GET /docs`, both served from the binary and readable without credentials in token mode.
mod common;

use common::*;

/// `(method, path)` of every operation in the document, with `{…}` parameters left in.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn the_document_describes_every_operation_the_server_answers() {
    let srv = Server::start();
    let resp = srv
        .client
        .get(srv.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let ops = operations(&doc);
    // The reference's 35 operations, `GET /api/whoami`, the two batch agent operations and
    // `GET /api/observe/queue`.
    assert_eq!(ops.len(), 39, "{ops:?}");

    // Each documented operation exists (no 404 `not_found` for the endpoint, no 405), and what it
    // answers to an unknown id and an empty body is among its documented responses.
    for (method, path) in &ops {
        let concrete = path
            .replace("{id}", "no-such-id")
            .replace("{run_id}", "no-such-run")
            .replace("{depends_on_id}", "no-such-task");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = srv.call(m, &concrete, None, &[]).await;
        let what = format!("{method} {concrete}");
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{what}");
        assert!(
            !(status == StatusCode::NOT_FOUND && body["code"] == "not_found"),
            "{what}: the endpoint does not exist"
        );
        let documented = &doc["paths"][path][method.to_lowercase()]["responses"];
        assert!(
            documented[status.as_str()].is_object(),
            "{what} answered {status} {body}, which the document does not list"
        );
    }
}

#[tokio::test]
async fn docs_render_the_document_from_the_binary() {
    let srv = Server::start();
    let page = srv.client.get(srv.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"spec-url="/openapi.json""#), "{html}");
    assert!(
        !html.contains("https://"),
        "the page loads nothing from elsewhere: {html}"
    );
    let script = srv
        .client
        .get(srv.url("/docs/redoc.standalone.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script.bytes().await.unwrap().len() > 100_000);
    let (status, body) = srv.get("/docs/no-such-asset.js").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn the_reference_needs_no_token_in_token_mode() {
    let srv = Server::start_with_env(&[("TASKLANE_AUTH", "token")]);
    for path in ["/openapi.json", "/docs", "/docs/redoc.standalone.js"] {
        let resp = srv.client.get(srv.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let (status, body) = srv.get("/api/tasks").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = srv.post_empty("/docs").await;
    assert_eq!(status, 401, "only reads are public: {body}");
}
