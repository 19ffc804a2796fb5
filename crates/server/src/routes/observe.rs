//! The observe surfaces: dashboard, inbox, triage, timeline and tree (the stream is in
//! `stream.rs`, queue health in `queue.rs`). Handlers parse the query and make one call into
//! `tasklane_core::observe`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::json;
use tasklane_core::error::{Error, Result};
use tasklane_core::model::{OriginKind, OwnerKind};
use tasklane_core::observe::{self, InboxQuery, Lane, ObserveFilter, Thresholds, TriageAction};
use tasklane_core::page;
use tasklane_core::time::Ts;
use tasklane_core::validate;

use super::json;
use super::{queue, stream};
use crate::auth::Identity;
use crate::error::ApiResult;
use crate::path::Path;
use crate::query::{scope_and_workspace, Params};
use crate::sse_hub::Hub;
use crate::state::AppState;

/// What the observe routes share beyond `AppState`.
pub struct Observe {
    /// This server's start; `forced_stops` counts since the service started (the reference's
    /// "since the observer started"), which is this instant unless other servers share the
    /// database (see `Store::service_started_at`).
    pub started_at: Ts,
    pub thresholds: Thresholds,
    pub hub: Arc<Hub>,
}

/// The observe routes, to be merged into the main router (inside its auth layer).
pub fn router(state: &AppState) -> Router<AppState> {
    let shared = Arc::new(Observe {
        started_at: state.clock.now(),
        thresholds: Thresholds::default(),
        hub: Hub::new(state.store.clone(), state.shutting_down.subscribe()),
    });
    Router::new()
        .route("/api/observe/tasks/dashboard", get(dashboard))
        .route("/api/observe/tasks/inbox", get(inbox))
        .route("/api/observe/queue", get(queue::queue_health))
        .route("/api/tasks/{id}/timeline", get(timeline))
        .route("/api/tasks/{id}/tree", get(tree))
        .route("/api/tasks/{id}/stream", get(stream::stream))
        .route("/api/tasks/{id}/triage/read", post(triage_read))
        .route("/api/tasks/{id}/triage/dismiss", post(triage_dismiss))
        .route("/api/tasks/{id}/triage/archive", post(triage_archive))
        .layer(Extension(shared))
}

/// A path id, trimmed; empty is a validation error.
pub(crate) fn path_id(id: &str) -> Result<String> {
    let id = id.trim();
    if id.is_empty() {
        return Err(Error::validation("task id is required"));
    }
    Ok(id.to_string())
}

/// `scope`, `workspace`, `owner_kind`, `owner_ref`: a workspace needs `scope=workspace`.
fn task_filter(p: &Params) -> Result<ObserveFilter> {
    let (scope, workspace_id) = scope_and_workspace(p, false)?;
    Ok(ObserveFilter {
        scope,
        workspace_id,
        owner_kind: p.parse("owner_kind", OwnerKind::parse)?,
        owner_ref: p.get("owner_ref"),
        network_channel: None,
        origin_kind: None,
    })
}

pub(crate) fn dashboard_filter(p: &Params) -> Result<ObserveFilter> {
    let mut f = task_filter(p)?;
    f.network_channel = p.get("network_channel");
    if let Some(ch) = &f.network_channel {
        validate::network_channel(ch)?;
    }
    f.origin_kind = p.parse("origin_kind", OriginKind::parse)?;
    Ok(f)
}

/// Like Go's `strconv.ParseBool`, which the reference uses for `unread`.
fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(Error::validation(format!(
            "{key} must be a boolean; got {v:?}"
        ))),
    }
}

pub(crate) fn inbox_query(p: &Params) -> Result<InboxQuery> {
    Ok(InboxQuery {
        filter: task_filter(p)?,
        query: p.get("query"),
        lane: p.parse("lane", Lane::parse)?,
        unread: p
            .parse("unread", |v| parse_bool("unread", v))?
            .unwrap_or(false),
        limit: Some(p.page_size()?),
    })
}

/// A non-negative sequence cursor; absent = 0.
pub(crate) fn sequence(key: &str, v: Option<&str>) -> Result<i64> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(0);
    };
    match v.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(Error::validation(format!(
            "{key} must be a non-negative integer; got {v:?}"
        ))),
    }
}

async fn dashboard(
    State(s): State<AppState>,
    Extension(obs): Extension<Arc<Observe>>,
    raw: RawQuery,
) -> ApiResult<Response> {
    let filter = dashboard_filter(&Params::from_raw(&raw))?;
    let clock = s.clock.clone();
    let since = s.store.service_started_at(obs.started_at).await?;
    let th = obs.thresholds.clone();
    let dashboard = s
        .store
        .read_observe(move |r| observe::dashboard(r, &filter, clock.now(), since, &th))
        .await?;
    Ok(json(StatusCode::OK, json!({ "dashboard": dashboard })))
}

async fn inbox(State(s): State<AppState>, who: Identity, raw: RawQuery) -> ApiResult<Response> {
    let q = inbox_query(&Params::from_raw(&raw))?;
    let actor = who.actor;
    let inbox = s
        .store
        .read_observe(move |r| observe::inbox(r, &actor, &q))
        .await?;
    Ok(json(StatusCode::OK, json!({ "inbox": inbox })))
}

async fn timeline(
    State(s): State<AppState>,
    Path(id): Path<String>,
    raw: RawQuery,
) -> ApiResult<Response> {
    let id = path_id(&id)?;
    let p = Params::from_raw(&raw);
    let after = match (p.get("cursor"), p.get("after_sequence")) {
        (Some(_), Some(_)) => {
            return Err(Error::validation("give either cursor or after_sequence, not both").into())
        }
        (Some(c), None) => page::parse_sequence_cursor(&c)?,
        (None, seq) => sequence("after_sequence", seq.as_deref())?,
    };
    let size = p.page_size()?;
    let page = s
        .store
        .read_observe(move |r| observe::timeline(r, &id, after, size))
        .await?;
    Ok(json(StatusCode::OK, page.to_json("timeline")))
}

async fn tree(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult<Response> {
    let id = path_id(&id)?;
    let tree = s.store.read_observe(move |r| observe::tree(r, &id)).await?;
    Ok(json(StatusCode::OK, json!({ "tree": tree })))
}

async fn triage(
    s: AppState,
    who: Identity,
    id: String,
    action: TriageAction,
) -> ApiResult<Response> {
    let id = path_id(&id)?;
    let actor = who.caller(action.action_name()).actor;
    let clock = s.clock.clone();
    // `now` is read inside the writer, like every write.
    let record = s
        .store
        .write_observe(move |w| observe::apply_triage(w, &id, &actor, action, clock.now()))
        .await?;
    Ok(json(StatusCode::OK, json!({ "triage": record })))
}

async fn triage_read(
    State(s): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    triage(s, who, id, TriageAction::Read).await
}

async fn triage_dismiss(
    State(s): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    triage(s, who, id, TriageAction::Dismiss).await
}

async fn triage_archive(
    State(s): State<AppState>,
    who: Identity,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    triage(s, who, id, TriageAction::Archive).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::RawQuery;

    fn params(q: &str) -> Params {
        Params::from_raw(&RawQuery(Some(q.to_string())))
    }

    #[test]
    fn bad_observe_queries_are_validation_errors() {
        for q in [
            "workspace=w",
            "scope=global&workspace=w",
            "scope=workspace",
            "scope=bogus",
            "owner_kind=robot",
            "network_channel=Bad%20Channel",
            "origin_kind=carrier",
        ] {
            assert!(dashboard_filter(&params(q)).is_err(), "{q}");
        }
        for q in ["lane=bogus", "unread=yes", "limit=-1", "limit=x"] {
            assert!(inbox_query(&params(q)).is_err(), "{q}");
        }
        let q = inbox_query(&params("lane=APPROVALS&unread=t&limit=0")).unwrap();
        assert_eq!(q.lane, Some(Lane::Approvals));
        assert!(q.unread);
        assert_eq!(
            q.limit,
            Some(page::DEFAULT_LIMIT),
            "0 means the default page"
        );
    }

    #[test]
    fn sequences_are_non_negative_integers() {
        assert_eq!(sequence("s", None).unwrap(), 0);
        assert_eq!(sequence("s", Some(" 7 ")).unwrap(), 7);
        assert!(sequence("s", Some("-1")).is_err());
        assert!(sequence("s", Some("bogus")).is_err());
    }
}
