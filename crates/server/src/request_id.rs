//! A request id on every request: in a tracing span around everything the request logs, and in
//! the `X-Request-Id` response header, so one answer can be found in the logs.
//!
//! A proxy in front may have named the request already; its id is kept when it is well formed
//! (1–128 visible ASCII characters), so the proxy's logs and ours agree. Anything else is
//! replaced: a header value that is too long or not printable would otherwise end up in every
//! log line of the request.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");
const MAX_LEN: usize = 128;

/// Middleware: assigns the id, runs the request inside its span, and answers with the header.
pub async fn assign(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&HEADER)
        .and_then(well_formed)
        .unwrap_or_else(generate);
    // The path, never the query or headers: those are where credentials travel.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    let mut response = async move {
        let started = std::time::Instant::now();
        let response = next.run(req).await;
        tracing::debug!(
            status = response.status().as_u16(),
            micros = started.elapsed().as_micros() as u64,
            "answered"
        );
        response
    }
    .instrument(span)
    .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

fn well_formed(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let ok =
        !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic());
    ok.then(|| String::from_utf8_lossy(bytes).into_owned())
}

fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_visible_ascii_ids_are_kept() {
        let keep = |s: &str| well_formed(&HeaderValue::from_str(s).unwrap());
        assert_eq!(keep("abc-123_XYZ.9").as_deref(), Some("abc-123_XYZ.9"));
        assert_eq!(keep(""), None);
        assert_eq!(keep("has space"), None);
        assert_eq!(keep(&"a".repeat(MAX_LEN)).map(|s| s.len()), Some(MAX_LEN));
        assert_eq!(keep(&"a".repeat(MAX_LEN + 1)), None);
        assert_eq!(
            well_formed(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()),
            None
        );
        assert_eq!(generate().len(), 32);
        assert_ne!(generate(), generate());
    }
}
