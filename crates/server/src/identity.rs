//! Identity headers of the reference API.

use axum::http::HeaderMap;

pub const SESSION_HEADER: &str = "x-agh-session-id";
pub const AGENT_HEADER: &str = "x-agh-agent";

/// A header's trimmed value; empty counts as absent.
pub fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}
