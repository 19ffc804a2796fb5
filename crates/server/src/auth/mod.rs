//! Authentication and authorization: who the caller is, and whether its role allows the request.
//!
//! Open mode (loopback only) has no credentials: `X-AGH-Session-ID` names an agent session and
//! anyone else is the local operator. Token mode requires `Authorization: Bearer <token>`; tokens
//! carry a role (operator, agent, viewer) whose rights are the table in `tasklane_core::policy`.
//!
//! - `mod.rs` (here): the middleware — public paths, identifying the caller, the [`Identity`]
//!   handed to handlers;
//! - `token_cache.rs`: the known tokens, refreshed from storage, and their revocation signals;
//! - `operations.rs`: which operation of the role table a request is, and the check against it.

mod operations;
mod token_cache;

use std::future::pending;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tasklane_core::model::{Caller, Ref, Role};
use tasklane_core::{tokens, Error};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::identity::{header_value, AGENT_HEADER, SESSION_HEADER};
use crate::state::AppState;

use self::operations::{authorize, operation};
pub use self::token_cache::TokenCache;

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Identity {
    pub actor: Ref,
    pub agent_name: Option<String>,
    /// `None` in open mode, where roles do not apply.
    pub role: Option<Role>,
    /// The API token's name (token mode).
    pub token_name: Option<String>,
    /// Becomes true when the token is revoked (token mode).
    revoked: Option<watch::Receiver<bool>>,
}

impl Identity {
    /// The caller of an operation `tasks.<action>` over HTTP.
    pub fn caller(&self, action: &str) -> Caller {
        Caller {
            actor: self.actor.clone(),
            origin: Ref::new("http", format!("tasks.{action}")),
            agent_name: self.agent_name.clone(),
            token_name: self.token_name.clone(),
            role: self.role,
        }
    }

    fn is_agent(&self) -> bool {
        self.actor.kind == "agent_session"
    }

    /// Resolves once the caller's token is revoked; never in open mode. Long-lived requests
    /// (streams, parked claims) select on it.
    pub async fn revoked(&self) {
        match &self.revoked {
            None => pending().await,
            Some(rx) => {
                // A dropped sender means the cache is gone: nothing vouches for the token.
                let _ = rx.clone().wait_for(|revoked| *revoked).await;
            }
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.as_ref().is_some_and(|rx| *rx.borrow())
    }

    /// The answer to a request whose token was revoked while it waited.
    pub fn revoked_error() -> ApiError {
        unauthorized("invalid_token", "the token was revoked")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or_else(|| ApiError(Error::Storage("request was not authenticated".into())))
    }
}

#[derive(Clone)]
pub enum AuthMode {
    Open,
    Token(TokenCache),
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError(Error::Unauthorized {
        code,
        message: message.to_string(),
    })
}

async fn identify(state: &AppState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let session = header_value(headers, SESSION_HEADER)?;
    let agent_name = header_value(headers, AGENT_HEADER)?;
    let AuthMode::Token(cache) = &state.auth else {
        return Ok(match session {
            Some(sid) => Identity {
                actor: Ref::new("agent_session", sid),
                agent_name,
                role: None,
                token_name: None,
                revoked: None,
            },
            None => Identity {
                actor: Ref::new("human", "local-user"),
                agent_name: None,
                role: None,
                token_name: None,
                revoked: None,
            },
        });
    };
    let raw = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            unauthorized(
                "credentials_required",
                "this server requires Authorization: Bearer <token>",
            )
        })?;
    let hash = tokens::hash(raw);
    let known = cache
        .resolve(state, &hash)
        .await?
        .ok_or_else(|| unauthorized("invalid_token", "the token is unknown or revoked"))?;
    cache.record_use(hash, state.clock.now());
    let (name, role) = (known.name.clone(), known.role);
    let revoked = Some(known.revoked.subscribe());
    Ok(match role {
        Role::Agent => Identity {
            actor: Ref::new("agent_session", session.unwrap_or_else(|| name.clone())),
            agent_name: agent_name.or(Some(name.clone())),
            role: Some(role),
            token_name: Some(name),
            revoked,
        },
        Role::Operator | Role::Viewer => Identity {
            actor: Ref::new("human", name.clone()),
            agent_name: None,
            role: Some(role),
            token_name: Some(name),
            revoked,
        },
    })
}

/// Middleware: authenticates, authorizes, and hands the [`Identity`] to the handler.
/// Paths anyone may GET without credentials, in every mode: what a client needs before it has a
/// token (the console's sign-in page and assets, the API description) and what a load balancer
/// or supervisor probes. Their handlers take no [`Identity`].
fn is_public(method: &Method, path: &str) -> bool {
    crate::health::is_probe(method, path)
        || ((method == Method::GET || method == Method::HEAD)
            && (matches!(path, "/" | "/openapi.json" | "/docs")
                || path.starts_with("/console/")
                || path.starts_with("/docs/")))
}

pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if is_public(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let op = operation(req.method(), req.uri().path());
    let result = identify(&state, req.headers())
        .await
        .and_then(|who| authorize(&who, op).map(|()| who));
    match result {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_of_the_public_paths_skip_authentication() {
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::GET, "/console/app.js"));
        assert!(is_public(&Method::HEAD, "/healthz"));
        assert!(is_public(&Method::GET, "/openapi.json"));
        assert!(is_public(&Method::GET, "/docs/redoc.standalone.js"));
        assert!(!is_public(&Method::POST, "/docs"));
        assert!(!is_public(&Method::POST, "/"));
        assert!(!is_public(&Method::GET, "/api/tasks"));
        assert!(!is_public(&Method::GET, "/metrics"));
        assert!(!is_public(&Method::GET, "/consolex"));
        assert!(!is_public(&Method::GET, "/docsx"));
    }
}
