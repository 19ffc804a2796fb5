//! Who is calling. In open mode (loopback only) `X-AGH-Session-ID` names an agent session and
//! anything else is the local human operator.

use axum::http::HeaderMap;
use tasklane_core::model::{Caller, Ref};

pub const SESSION_HEADER: &str = "x-agh-session-id";
pub const AGENT_HEADER: &str = "x-agh-agent";

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The caller of an HTTP request performing `tasks.<action>`.
pub fn caller(headers: &HeaderMap, action: &str) -> Caller {
    let origin = Ref::new("http", format!("tasks.{action}"));
    match header(headers, SESSION_HEADER) {
        Some(sid) => Caller {
            actor: Ref::new("agent_session", sid),
            origin,
            agent_name: header(headers, AGENT_HEADER),
        },
        None => Caller {
            actor: Ref::new("human", "local-user"),
            origin,
            agent_name: None,
        },
    }
}
