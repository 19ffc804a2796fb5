//! Request bodies: at most 4 MiB (413), within the body timeout (408), with sound framing (400), empty
//! means `{}`, must be a JSON object (400), and each field must have the right JSON type (400).
//! Missing or invalid values are left to the rules (422).

use std::error::Error as StdError;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use serde::de::DeserializeOwned;
use tasklane_core::validate::BODY_LIMIT;
use tasklane_core::Error;

use crate::connections::BodyTimeout;
use crate::error::{ApiError, HttpError};

/// The parsed body and its size in bytes, which bounds how much request data may wait in the
/// write queue (`AppState::write_body`).
pub struct JsonBody<T>(pub T, pub usize);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request<Body>, _state: &S) -> Result<Self, Response> {
        let bytes = axum::body::to_bytes(req.into_body(), BODY_LIMIT)
            .await
            .map_err(|e| read_error(&e))?;
        parse(&bytes)
            .map(|input| JsonBody(input, bytes.len()))
            .map_err(IntoResponse::into_response)
    }
}

/// Why a body could not be read: too long, too slow (see `connections`), or broken framing.
fn read_error(e: &axum::Error) -> Response {
    if caused_by::<BodyTimeout>(e) {
        return HttpError::RequestTimeout.into_response();
    }
    let error = if caused_by::<LengthLimitError>(e) {
        Error::too_large(format!(
            "request body too large; the limit is {BODY_LIMIT} bytes"
        ))
    } else {
        Error::bad_request(
            "invalid_body",
            format!("the request body could not be read: {e}"),
        )
    };
    ApiError(error).into_response()
}

fn caused_by<E: StdError + 'static>(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<E>() {
            return true;
        }
        cause = c.source();
    }
    false
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::invalid_json(format!("request body is not valid JSON: {e}")))?
    };
    if !value.is_object() {
        return Err(ApiError::invalid_json("request body must be a JSON object"));
    }
    if has_nul(&value) {
        // PostgreSQL cannot store U+0000 in text; refused alike on every backend.
        return Err(ApiError(Error::validation(
            "request body text must not contain the NUL character (\\u0000)",
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::invalid_json(format!("invalid request body: {e}")))
}

/// Whether any key or string in `value` contains U+0000.
fn has_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasklane_core::input::CreateTaskInput;

    #[test]
    fn nul_characters_are_refused_anywhere_in_the_body() {
        for body in [
            r#"{"title": "a\u0000b"}"#,
            r#"{"metadata": {"k\u0000": 1}}"#,
            r#"{"metadata": [["\u0000"]]}"#,
        ] {
            let err = parse::<serde_json::Value>(body.as_bytes()).unwrap_err();
            assert_eq!(err.0.code(), "validation_failed", "{body}");
        }
        // An escaped backslash followed by "u0000" is text, not a NUL.
        assert!(parse::<serde_json::Value>(br#"{"title": "\\u0000"}"#).is_ok());
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        let input: CreateTaskInput = parse(b"  ").unwrap();
        assert!(input.title.is_none());
    }

    #[test]
    fn wrong_types_and_non_objects_are_400() {
        assert_eq!(
            parse::<CreateTaskInput>(b"[1]").unwrap_err().0.code(),
            "invalid_json"
        );
        assert_eq!(
            parse::<CreateTaskInput>(b"{\"title\":5}")
                .unwrap_err()
                .0
                .code(),
            "invalid_json"
        );
        assert_eq!(
            parse::<CreateTaskInput>(b"{").unwrap_err().0.code(),
            "invalid_json"
        );
    }

    #[test]
    fn metadata_null_is_kept_apart_from_absent() {
        let with_null: CreateTaskInput = parse(b"{\"metadata\":null}").unwrap();
        assert_eq!(with_null.metadata, Some(serde_json::Value::Null));
        let absent: CreateTaskInput = parse(b"{}").unwrap();
        assert_eq!(absent.metadata, None);
    }
}
