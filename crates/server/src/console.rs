//! The web console: a single-page app written as plain HTML, CSS and JavaScript modules in
//! `crates/server/console/`, compiled into the binary so `tasklane serve` needs nothing else at
//! run time. `/` answers the page shell, `/console/<file>` its assets, and `/api/whoami` tells the
//! page who it is acting as, so it can offer only what the caller's role allows.
//!
//! The assets are fixed for the life of the binary, so each carries a strong `ETag` (a hash of its
//! bytes) and `Cache-Control: no-cache`: a browser revalidates on every load and gets a 304 unless
//! the binary changed, so an upgrade is never masked by a stale cache.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tasklane_core::policy::{self, Field, Operation};
use tasklane_core::Error;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::routes::json;
use crate::state::AppState;

/// Every asset the console has: name under `/console/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", HTML, include_str!("../console/index.html")),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../console/style.css"),
    ),
    ("app.js", JS, include_str!("../console/app.js")),
    ("api.js", JS, include_str!("../console/api.js")),
    ("dom.js", JS, include_str!("../console/dom.js")),
    ("views.js", JS, include_str!("../console/views.js")),
    ("task.js", JS, include_str!("../console/task.js")),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../console/favicon.svg"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// The console's routes, merged into the main router inside its browser and auth layers
/// (`auth::is_public` lets the page and its assets through without credentials).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(shell))
        .route("/console/{*file}", get(asset))
        .route("/api/whoami", get(whoami))
}

/// The ETag of each asset, in `ASSETS` order, computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|(_, _, body)| format!("\"{:016x}\"", fnv1a(body.as_bytes())))
            .collect()
    })
}

/// FNV-1a, 64 bits: enough to tell two builds' assets apart, and no dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

async fn shell(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|(name, _, _)| *name == file) {
        Some(i) => serve(i, &headers),
        None => ApiError(Error::not_found("not_found", "no such console file")).into_response(),
    }
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let (_, content_type, body) = ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let common = [
        (header::ETAG, HeaderValue::from_str(etag).expect("hex etag")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let mut response = (
        StatusCode::OK,
        common,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    if content_type == HTML {
        // The page loads only its own assets and talks only to its own origin.
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        );
    }
    response
}

/// The caller as the server sees it: the auth mode, the role (token mode), the actor, and which
/// of the console's actions the role table (`tasklane_core::policy`) allows it. Rules that depend
/// on the task (manual approval gates) are left to the server, whose refusal the console shows.
async fn whoami(who: Identity) -> Response {
    use Operation::*;
    let ops = [
        ("create_task", CreateTask),
        ("create_child", CreateChild),
        ("update_task", UpdateTask),
        ("publish_task", PublishTask),
        ("approve_task", ApproveTask),
        ("reject_task", RejectTask),
        ("start_task", StartTask),
        ("cancel_task", CancelTask),
        ("add_dependency", AddDependency),
        ("remove_dependency", RemoveDependency),
        ("enqueue_run", EnqueueRun),
        ("triage", Triage),
        ("cancel_run", CancelRun),
    ];
    let mut may: serde_json::Map<String, serde_json::Value> = ops
        .iter()
        .map(|(name, op)| (name.to_string(), policy::allows(who.role, *op).into()))
        .collect();
    may.insert(
        "set_approval_policy".into(),
        policy::allows_field(who.role, Field::ApprovalPolicy).into(),
    );
    json(
        StatusCode::OK,
        json!({
            "whoami": {
                "auth": if who.role.is_some() { "token" } else { "open" },
                "role": who.role.map(|r| r.as_str()),
                "actor": who.actor,
                "may": may,
            }
        }),
    )
}
