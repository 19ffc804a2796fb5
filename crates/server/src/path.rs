//! Path parameters. A segment that is not UTF-8 once percent-decoded (`/api/tasks/%FF`) is a 400
//! `invalid_path` in the error shape, not axum's plain-text rejection.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tasklane_core::Error;

use crate::error::ApiError;

pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            // A route whose parameters do not fit its handler is a bug, not the client's doing.
            Err(rejection) if rejection.status().is_server_error() => {
                Err(ApiError(Error::Storage(rejection.body_text())))
            }
            Err(rejection) => Err(ApiError(Error::bad_request(
                "invalid_path",
                format!("the request path is not valid: {}", rejection.body_text()),
            ))),
        }
    }
}
