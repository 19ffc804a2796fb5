//! The OpenAPI 3.1 document of the API (`GET /openapi.json`) and its rendered reference
//! (`GET /docs`, Redoc embedded in the binary).
//!
//! The schemas are derived from the core's wire types (`tasklane-core`'s `openapi` feature), so a
//! field added to a view or an input appears here by itself. Operations are described in
//! `operations`, the envelopes the handlers build with `json!` in `bodies`, query parameters in
//! `params`. What every operation shares — the error responses by status with their codes, the
//! security schemes, optional request bodies — is added here by [`Shared`].

mod bodies;
mod operations;
mod params;

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::request_body::RequestBody;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{
    schema::{ObjectBuilder, Type},
    ContentBuilder, Ref, RefOr, Required, ResponseBuilder,
};
use utoipa::{Modify, OpenApi};

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tasklane",
        description = include_str!("description.md"),
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        operations::list_tasks,
        operations::create_task,
        operations::get_task,
        operations::update_task,
        operations::delete_task,
        operations::publish_task,
        operations::approve_task,
        operations::reject_task,
        operations::start_task,
        operations::cancel_task,
        operations::create_child_task,
        operations::add_dependency,
        operations::remove_dependency,
        operations::list_task_runs,
        operations::enqueue_run,
        operations::get_run,
        operations::claim_run,
        operations::start_run,
        operations::attach_run_session,
        operations::complete_run,
        operations::fail_run,
        operations::cancel_run,
        operations::claim_next,
        operations::heartbeat,
        operations::agent_complete,
        operations::agent_fail,
        operations::release,
        operations::claim_batch,
        operations::complete_batch,
        operations::dashboard,
        operations::inbox,
        operations::queue_health,
        operations::timeline,
        operations::tree,
        operations::stream,
        operations::triage_read,
        operations::triage_dismiss,
        operations::triage_archive,
        operations::whoami,
    ),
    // Schemas that only query parameters use are not collected on their own.
    components(schemas(
        bodies::ErrorBody,
        tasklane_core::model::OwnerKind,
        tasklane_core::model::OriginKind,
        tasklane_core::model::RunStatus,
        tasklane_core::model::TaskStatus,
        tasklane_core::model::ApprovalState,
        tasklane_core::model::Priority,
        tasklane_core::model::Scope,
        tasklane_core::observe::Lane,
    )),
    modifiers(&Shared),
    tags(
        (name = "tasks", description = "Tasks: create, read, update, delete and their actions"),
        (name = "dependencies", description = "Dependency edges between tasks"),
        (name = "runs", description = "Runs of a task; the operator run transitions"),
        (name = "agent", description = "The agent protocol: claim under a lease, heartbeat, finish"),
        (name = "observe", description = "Dashboard, queue health, inbox, triage, timeline, tree and the live stream"),
    ),
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        doc
    })
}

/// The error statuses, each with the codes it may carry (README "Errors"; the codes come from
/// `tasklane_core::Error` and `crate::error`).
const ERRORS: &[(u16, &str, &str, &[&str])] = &[
    (
        400,
        "BadRequest",
        "The body is not a JSON object or a field has the wrong JSON type; the body's framing is broken; a path segment is not UTF-8; a delete was refused",
        &[
            "invalid_json",
            "invalid_body",
            "invalid_path",
            "task_has_children",
            "task_has_open_runs",
        ],
    ),
    (
        401,
        "Unauthorized",
        "The agent API without an agent session; token mode without a token, or with an unknown or revoked one",
        &["identity_required", "credentials_required", "invalid_token"],
    ),
    (
        403,
        "Forbidden",
        "A cross-site write or a foreign `Host` (open mode); the role does not allow it; another owner's or session's work",
        &[
            "cross_site_request",
            "host_not_allowed",
            "forbidden_role",
            "owner_mismatch",
            "foreign_run",
        ],
    ),
    (
        404,
        "NotFound",
        "Unknown task, run or dependency edge",
        &[
            "task_not_found",
            "run_not_found",
            "dependency_not_found",
            "not_found",
        ],
    ),
    (
        408,
        "RequestTimeout",
        "The request body did not arrive within the body timeout",
        &["request_timeout"],
    ),
    (
        409,
        "Conflict",
        "The current state does not allow it",
        &[
            "invalid_transition",
            "open_run_exists",
            "attempts_exhausted",
            "dependency_cycle",
            "graph_limit_exceeded",
            "duplicate_dependency",
            "duplicate_task",
            "idempotency_key_conflict",
            "duplicate_idempotency_key",
            "session_already_bound",
            "session_in_use",
            "lease_required",
            "lease_held",
            "no_active_lease",
            "lease_expired",
        ],
    ),
    (
        413,
        "PayloadTooLarge",
        "metadata over 16 KiB, a result or fail/cancel metadata over 64 KiB, a body over 4 MiB",
        &["payload_too_large"],
    ),
    (
        422,
        "ValidationFailed",
        "A value is invalid: bad enum, missing required field, out-of-range number, bad query parameter or cursor, bad `X-AGH-Session-ID` / `X-AGH-Agent` header",
        &["validation_failed"],
    ),
    (
        500,
        "InternalError",
        "A bug; the details are in the server log",
        &["internal_error"],
    ),
    (
        503,
        "StorageUnavailable",
        "Storage overloaded or failing; retry after `Retry-After` seconds",
        &["storage_unavailable"],
    ),
];

/// The error statuses an operation may answer: every request is authenticated and its headers
/// checked; a body brings framing, size and timeout errors; a path id brings 400 `invalid_path`
/// and 404; every write may conflict with the state.
fn error_statuses(method: &HttpMethod, path: &str, has_body: bool) -> Vec<u16> {
    let mut statuses = vec![401, 403, 422, 500, 503];
    if has_body || path.contains('{') {
        statuses.push(400);
    }
    if path.contains('{') {
        statuses.push(404);
    }
    if has_body {
        statuses.extend([408, 413]);
    }
    if !matches!(method, HttpMethod::Get) {
        statuses.push(409);
    }
    statuses.sort_unstable();
    statuses
}

/// Where an answer's id feeds the next request: (operation, status, JSON pointer into its body,
/// parameter, operations taking it). Clients and fuzzers follow these to chain calls.
const LINKS: &[(&str, &str, &str, &str, &[&str])] = &[
    ("create_task", "201", "/task/id", "id", TASK_USERS),
    ("create_child_task", "201", "/task/id", "id", TASK_USERS),
    ("start_task", "201", "/run/id", "id", RUN_USERS),
    ("enqueue_run", "201", "/run/id", "id", RUN_USERS),
    ("claim_next", "200", "/claim/run/id", "run_id", LEASE_USERS),
];
const TASK_USERS: &[&str] = &[
    "get_task",
    "update_task",
    "delete_task",
    "publish_task",
    "approve_task",
    "reject_task",
    "start_task",
    "cancel_task",
    "create_child_task",
    "add_dependency",
    "list_task_runs",
    "enqueue_run",
    "timeline",
    "tree",
    "triage_read",
    "triage_dismiss",
    "triage_archive",
];
const RUN_USERS: &[&str] = &[
    "get_run",
    "claim_run",
    "start_run",
    "attach_run_session",
    "complete_run",
    "fail_run",
    "cancel_run",
];
const LEASE_USERS: &[&str] = &["heartbeat", "agent_complete", "agent_fail", "release"];

fn add_links(op: &mut Operation) {
    let Some(id) = op.operation_id.clone() else {
        return;
    };
    for (_, status, pointer, param, users) in LINKS.iter().filter(|l| l.0 == id) {
        if let Some(RefOr::T(response)) = op.responses.responses.get_mut(*status) {
            for user in *users {
                let link = LinkBuilder::new()
                    .operation_id(*user)
                    .parameter(*param, format!("$response.body#{pointer}"))
                    .build();
                response.links.insert(user.to_string(), RefOr::T(link));
            }
        }
    }
}

struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (status, name, description, codes) in ERRORS {
            let schema = ObjectBuilder::new()
                .property(
                    "error",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("A human-readable message")),
                )
                .property(
                    "code",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(codes.iter().copied()))
                        .description(Some("A stable machine code")),
                )
                .required("error")
                .required("code")
                .description(Some(format!("The error body of a {status}")));
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(schema)).build(),
                )
                .build();
            components
                .responses
                .insert(name.to_string(), RefOr::T(response));
        }
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Token mode (`tasklane serve --auth token`): `Authorization: Bearer <token>` \
                         on every request; the token's role (operator, agent, viewer) decides what it \
                         may do. Open mode needs no credentials.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "agentSession",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-AGH-Session-ID",
                "The agent session the caller acts as (at most 256 bytes of text). Required by the \
                 agent API in open mode; in token mode an agent token's name stands in when absent.",
            ))),
        );
        components.add_security_scheme(
            "agentName",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-AGH-Agent",
                "Optional: the agent's name, recorded with its events (at most 256 bytes of text).",
            ))),
        );
        let none = || SecurityRequirement::default();
        let scheme = |name: &str| SecurityRequirement::new(name, Vec::<String>::new());
        // Open mode needs nothing, hence the empty requirement; token mode needs the bearer token.
        doc.security = Some(vec![none(), scheme("bearerAuth")]);

        for (path, item) in doc.paths.paths.iter_mut() {
            let agent = path.starts_with("/api/agent/");
            for (method, op) in operations_mut(item) {
                // An empty body means `{}`: every request body is optional.
                if let Some(body) = op.request_body.as_mut() {
                    set_optional(body);
                }
                let has_body = op.request_body.is_some();
                for status in error_statuses(&method, path, has_body) {
                    let (_, name, _, _) = ERRORS
                        .iter()
                        .find(|(s, ..)| *s == status)
                        .expect("every status used is in ERRORS");
                    op.responses.responses.insert(
                        status.to_string(),
                        RefOr::Ref(Ref::from_response_name(*name)),
                    );
                }
                add_links(op);
                if agent {
                    op.security = Some(vec![scheme("agentSession"), scheme("bearerAuth")]);
                }
            }
        }
    }
}

fn set_optional(body: &mut RequestBody) {
    body.required = Some(Required::False);
}

fn operations_mut(item: &mut utoipa::openapi::PathItem) -> Vec<(HttpMethod, &mut Operation)> {
    [
        (HttpMethod::Get, item.get.as_mut()),
        (HttpMethod::Post, item.post.as_mut()),
        (HttpMethod::Put, item.put.as_mut()),
        (HttpMethod::Patch, item.patch.as_mut()),
        (HttpMethod::Delete, item.delete.as_mut()),
        (HttpMethod::Head, item.head.as_mut()),
        (HttpMethod::Options, item.options.as_mut()),
        (HttpMethod::Trace, item.trace.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

/// `/openapi.json`, `/docs` and its asset. Public: `auth::is_public` lets them through without
/// credentials, so a client can read the API before it has a token.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs_page))
        .route("/docs/redoc.standalone.js", get(redoc_js))
}

/// The document as served. utoipa 5 writes a link's fields in snake case (`operation_id`);
/// OpenAPI spells them `operationId`, `operationRef`, `requestBody`.
pub fn document_json() -> serde_json::Value {
    fn fix_links(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                    for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                        for (from, to) in [
                            ("operation_id", "operationId"),
                            ("operation_ref", "operationRef"),
                            ("request_body", "requestBody"),
                        ] {
                            if let Some(value) = link.remove(from) {
                                link.insert(to.to_string(), value);
                            }
                        }
                    }
                }
                map.values_mut().for_each(fix_links);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(fix_links),
            _ => {}
        }
    }
    let mut doc = serde_json::to_value(document()).expect("the document serializes");
    fix_links(&mut doc);
    doc
}

async fn openapi_json() -> Response {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        serde_json::to_string_pretty(&document_json()).expect("the document serializes")
    });
    asset("application/json", body.as_bytes())
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tasklane API reference</title>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
"#;

async fn docs_page() -> Response {
    asset("text/html; charset=utf-8", DOCS_PAGE.as_bytes())
}

async fn redoc_js() -> Response {
    static REDOC: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");
    asset("text/javascript; charset=utf-8", REDOC)
}

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests;
