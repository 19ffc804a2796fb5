//! One module per API resource; each holds its handlers and their request parsing.

pub mod agent;
pub mod observe;
pub mod queue;
pub mod runs;
pub mod stream;
pub mod tasks;
pub mod testing;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// A JSON response with a status.
pub fn json<T: Serialize>(status: StatusCode, body: T) -> Response {
    (status, Json(body)).into_response()
}

/// A JSON response whose body is `{ key: body }`, written straight from `body`: wrapping it
/// with `json!` would first copy all of it into a `serde_json::Value` tree.
pub fn keyed<T: Serialize>(status: StatusCode, key: &'static str, body: T) -> Response {
    json(status, Keyed { key, body })
}

struct Keyed<T> {
    key: &'static str,
    body: T,
}

impl<T: Serialize> Serialize for Keyed<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.key, &self.body)?;
        map.end()
    }
}

/// Declares a write handler on the resource its path names, with a JSON body: the handler's
/// name, the action of the caller's origin (`tasks.<action>`), the body type, the rule in
/// `tasklane_core` (called as `rule(op, &id, &input)`), the success status, and the key its
/// answer goes under (without one, the rule's answer is the whole body). Every such handler
/// thus parses, identifies, writes and answers the same way.
macro_rules! path_write {
    ($name:ident, $action:literal, $input:ty, $rule:path, $status:ident) => {
        $crate::routes::path_write!(@handler $name, $action, $input, $rule, |out| {
            $crate::routes::json(axum::http::StatusCode::$status, out)
        });
    };
    ($name:ident, $action:literal, $input:ty, $rule:path, $status:ident, $key:literal) => {
        $crate::routes::path_write!(@handler $name, $action, $input, $rule, |out| {
            $crate::routes::keyed(axum::http::StatusCode::$status, $key, out)
        });
    };
    (@handler $name:ident, $action:literal, $input:ty, $rule:path, $answer:expr) => {
        pub async fn $name(
            axum::extract::State(s): axum::extract::State<$crate::state::AppState>,
            who: $crate::auth::Identity,
            $crate::path::Path(id): $crate::path::Path<String>,
            $crate::body::JsonBody(input, body_bytes): $crate::body::JsonBody<$input>,
        ) -> $crate::error::ApiResult<axum::response::Response> {
            let out = s
                .write_body(who.caller($action), body_bytes, move |op| $rule(op, &id, &input))
                .await?;
            Ok(($answer)(out))
        }
    };
}
pub(crate) use path_write;
