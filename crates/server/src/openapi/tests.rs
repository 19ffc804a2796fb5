use std::collections::BTreeSet;
use std::path::Path;

use super::*;

/// Routes the document leaves out on purpose: the test clock's control exists only with
/// `--test-clock` and is no part of the product's API.
const UNDOCUMENTED: &[(&str, &str)] = &[("POST", "/api/_test/clock/advance")];

/// Every `(METHOD, path)` the server's sources register with `.route("/api…", …)`: the path
/// literal and the method routers (`get(…)`, `.post(…)`, `axum::routing::delete(…)`) of each call.
/// Reading the sources finds a route however the router is assembled (merged sub-routers too).
fn routed() -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in rust_files(&src) {
        // This module's own sources are not the router's.
        if file.starts_with(src.join("openapi")) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (path, methods) in route_calls(&text) {
            if path.starts_with("/api") {
                for m in methods {
                    found.insert((m, path.clone()));
                }
            }
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The path and methods of each `.route(` call in `text`.
fn route_calls(text: &str) -> Vec<(String, Vec<String>)> {
    let needle = concat!(".route", "(");
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(needle) {
        rest = &rest[at + needle.len()..];
        let args = rest.trim_start();
        let Some(args) = args.strip_prefix('"') else {
            continue;
        };
        let Some(end) = args.find('"') else { break };
        let path = args[..end].to_string();
        // The call's arguments end at the parenthesis that closes `.route(`.
        let mut depth = 1;
        let mut close = args.len();
        for (i, c) in args.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        calls.push((path, methods_in(&args[end + 1..close])));
    }
    calls
}

/// The HTTP methods named by method routers in a route's second argument: an identifier among
/// `get`, `post`, … directly followed by `(` (handler names such as `tasks::get` are not).
fn methods_in(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut methods = Vec::new();
    for m in ["get", "post", "put", "patch", "delete", "head", "options"] {
        let call = format!("{m}(");
        let mut from = 0;
        while let Some(at) = expr[from..].find(&call) {
            let start = from + at;
            let before = start.checked_sub(1).map(|i| bytes[i]);
            if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                methods.push(m.to_uppercase());
            }
            from = start + call.len();
        }
    }
    methods
}

fn documented() -> BTreeSet<(String, String)> {
    let doc = document_json();
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if matches!(
                method.as_str(),
                "get" | "post" | "put" | "patch" | "delete" | "head" | "options"
            ) {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

#[test]
fn routes_and_document_agree() {
    let undocumented: BTreeSet<_> = UNDOCUMENTED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let routed = routed();
    assert!(
        undocumented.is_subset(&routed),
        "an exception names a route that no longer exists: {:?}",
        undocumented.difference(&routed).collect::<Vec<_>>()
    );
    let routed: BTreeSet<_> = routed.difference(&undocumented).cloned().collect();
    let documented = documented();
    let missing: Vec<_> = routed.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routes without an OpenAPI entry (add one in openapi/operations.rs): {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "OpenAPI entries without a route: {stale:?}"
    );
    // The scanner found the router's routes: at least the reference's 35 operations.
    assert!(
        routed.len() >= 35,
        "the scanner found {} routes",
        routed.len()
    );
}

#[test]
fn the_route_scanner_reads_every_form_the_router_uses() {
    let text = r#"
        .route("/api/a", get(x::list).post(x::create))
        .route(
            "/api/a/{id}",
            get(x::get).patch(x::patch).delete(x::delete),
        )
        .route("/api/a/{id}/b/{c}", axum::routing::delete(x::remove))
        .route("/healthz", get(health))
    "#;
    let calls = route_calls(text);
    assert_eq!(
        calls,
        vec![
            ("/api/a".into(), vec!["GET".into(), "POST".into()]),
            (
                "/api/a/{id}".into(),
                vec!["GET".into(), "PATCH".into(), "DELETE".into()]
            ),
            ("/api/a/{id}/b/{c}".into(), vec!["DELETE".into()]),
            ("/healthz".into(), vec!["GET".into()]),
        ]
    );
}

#[test]
fn the_document_is_openapi_3_1_with_errors_and_security() {
    let doc = document_json();
    assert_eq!(doc["openapi"], "3.1.0");
    let op = &doc["paths"]["/api/tasks/{id}/start"]["post"];
    for status in [
        "201", "400", "401", "403", "404", "409", "413", "422", "503",
    ] {
        assert!(
            op["responses"][status].is_object(),
            "start answers {status}"
        );
    }
    let conflict = &doc["components"]["responses"]["Conflict"]["content"]["application/json"];
    let codes = conflict["schema"]["properties"]["code"]["enum"]
        .as_array()
        .unwrap();
    assert!(codes.contains(&"open_run_exists".into()));
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for scheme in ["bearerAuth", "agentSession", "agentName"] {
        assert!(schemes.contains_key(scheme), "{scheme}");
    }
    let stream = &doc["paths"]["/api/tasks/{id}/stream"]["get"]["responses"]["200"];
    assert!(stream["content"]["text/event-stream"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["Priority"]["enum"],
        serde_json::json!(["low", "medium", "high", "urgent"])
    );
}

#[test]
fn every_error_status_used_is_described() {
    let statuses: Vec<u16> = ERRORS.iter().map(|e| e.0).collect();
    for method in [HttpMethod::Get, HttpMethod::Post, HttpMethod::Delete] {
        for s in error_statuses(&method, "/api/tasks/{id}", true) {
            assert!(statuses.contains(&s), "{s}");
        }
    }
}

/// Every `$ref` points at a component the document holds, and every link at an operation.
#[test]
fn references_resolve() {
    fn walk(v: &serde_json::Value, refs: &mut Vec<String>, links: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("$ref", serde_json::Value::String(r)) => refs.push(r.clone()),
                        ("operationId", serde_json::Value::String(o)) => links.push(o.clone()),
                        _ => walk(v, refs, links),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, refs, links)),
            _ => {}
        }
    }
    let doc = document_json();
    let (mut refs, mut ids) = (Vec::new(), Vec::new());
    walk(&doc, &mut refs, &mut ids);
    for r in refs {
        let pointer = r.strip_prefix('#').expect("local reference");
        assert!(doc.pointer(pointer).is_some(), "unresolved {r}");
    }
    let all: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str().map(str::to_string))
        .collect();
    let ops: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(ops.len(), all.len(), "operation ids are unique");
    for id in ids {
        assert!(
            ops.contains(&id),
            "a link names {id}, which is no operation"
        );
    }
}
