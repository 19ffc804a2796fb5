//! Identity headers of the reference API.

use axum::http::HeaderMap;
use tasklane_core::{validate, Error};

pub const SESSION_HEADER: &str = "x-agh-session-id";
pub const AGENT_HEADER: &str = "x-agh-agent";

/// An identity header's trimmed value; empty counts as absent. A value that is not text, too
/// long or has control characters is refused (422) rather than ignored: ignoring it would make
/// the caller someone else (in open mode, the local operator).
pub fn header_value(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, Error> {
    validate::identity_header(name, headers.get(name).map(|v| v.as_bytes()))
}
