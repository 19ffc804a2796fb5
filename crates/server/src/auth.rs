//! Authentication and authorization: who the caller is, and whether its role allows the request.
//!
//! Open mode (loopback only) has no credentials: `X-AGH-Session-ID` names an agent session and
//! anyone else is the local operator. Token mode requires `Authorization: Bearer <token>`; tokens
//! carry a role (operator, agent, viewer) and are looked up by hash in a cache that is refreshed
//! from storage every second, so created and revoked tokens take effect within a second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tasklane_core::model::{Caller, Ref, Role};
use tasklane_core::time::Ts;
use tasklane_core::{tokens, Error};

use crate::error::ApiError;
use crate::identity::{header_value, AGENT_HEADER, SESSION_HEADER};
use crate::state::AppState;

/// The authenticated caller of one request.
#[derive(Clone, Debug)]
pub struct Identity {
    pub actor: Ref,
    pub agent_name: Option<String>,
    /// `None` in open mode, where roles do not apply.
    pub role: Option<Role>,
    /// The API token's name (token mode).
    pub token_name: Option<String>,
}

impl Identity {
    /// The caller of an operation `tasks.<action>` over HTTP.
    pub fn caller(&self, action: &str) -> Caller {
        Caller {
            actor: self.actor.clone(),
            origin: Ref::new("http", format!("tasks.{action}")),
            agent_name: self.agent_name.clone(),
            token_name: self.token_name.clone(),
        }
    }

    fn is_agent(&self) -> bool {
        self.actor.kind == "agent_session"
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

/// What a request needs to be allowed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    Read,
    Write,
    /// Approve or reject: a worker may never approve work.
    Approve,
    /// The agent API: an agent session identity.
    Agent,
}

fn need(method: &Method, path: &str) -> Need {
    if path.starts_with("/api/agent/") {
        Need::Agent
    } else if method == Method::GET || method == Method::HEAD {
        Need::Read
    } else if method == Method::POST && is_approval_path(path) {
        Need::Approve
    } else {
        Need::Write
    }
}

/// `/api/tasks/{id}/approve` or `/api/tasks/{id}/reject` (a task may itself be named "approve").
fn is_approval_path(path: &str) -> bool {
    matches!(
        path.split('/').collect::<Vec<_>>().as_slice(),
        ["", "api", "tasks", _, "approve" | "reject"]
    )
}

#[derive(Clone)]
pub enum AuthMode {
    Open,
    Token(TokenCache),
}

/// Known tokens by hash, plus last-use times waiting to be written.
#[derive(Clone, Default)]
pub struct TokenCache {
    by_hash: Arc<RwLock<HashMap<String, (String, Role)>>>,
    used: Arc<Mutex<HashMap<String, Ts>>>,
}

impl TokenCache {
    fn lookup(&self, hash: &str) -> Option<(String, Role)> {
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    /// Replaces the cache with what storage holds now.
    pub async fn refresh(&self, state: &AppState) -> Result<(), Error> {
        let tokens = state.store.read(|r| r.api_tokens()).await?;
        let map = tokens
            .into_iter()
            .map(|t| (t.token_hash, (t.name, t.role)))
            .collect();
        *self.by_hash.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// Writes the last-use times gathered since the previous flush, in one transaction.
    pub async fn flush_last_use(&self, state: &AppState) -> Result<(), Error> {
        let used: Vec<(String, Ts)> = self
            .used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        if used.is_empty() {
            return Ok(());
        }
        state
            .store
            .write(move |w| {
                for (hash, at) in &used {
                    w.touch_api_token(hash, *at)?;
                }
                Ok(())
            })
            .await
    }

    /// Keeps the cache fresh (every second) and last-use times written (every five seconds).
    pub fn spawn_maintenance(&self, state: AppState) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut n: u64 = 0;
            loop {
                tick.tick().await;
                if let Err(e) = cache.refresh(&state).await {
                    tracing::warn!(error = %e, "token cache refresh failed");
                }
                n += 1;
                if n.is_multiple_of(5) {
                    if let Err(e) = cache.flush_last_use(&state).await {
                        tracing::warn!(error = %e, "recording token use failed");
                    }
                }
            }
        });
    }
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError(Error::Unauthorized {
        code,
        message: message.to_string(),
    })
}

fn identify(mode: &AuthMode, headers: &HeaderMap, now: Ts) -> Result<Identity, ApiError> {
    let session = header_value(headers, SESSION_HEADER);
    let agent_name = header_value(headers, AGENT_HEADER);
    let AuthMode::Token(cache) = mode else {
        return Ok(match session {
            Some(sid) => Identity {
                actor: Ref::new("agent_session", sid),
                agent_name,
                role: None,
                token_name: None,
            },
            None => Identity {
                actor: Ref::new("human", "local-user"),
                agent_name: None,
                role: None,
                token_name: None,
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
    let (name, role) = cache
        .lookup(&hash)
        .ok_or_else(|| unauthorized("invalid_token", "the token is unknown or revoked"))?;
    cache
        .used
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(hash, now);
    Ok(match role {
        Role::Agent => Identity {
            actor: Ref::new("agent_session", session.unwrap_or_else(|| name.clone())),
            agent_name: agent_name.or(Some(name.clone())),
            role: Some(role),
            token_name: Some(name),
        },
        Role::Operator | Role::Viewer => Identity {
            actor: Ref::new("human", name.clone()),
            agent_name: None,
            role: Some(role),
            token_name: Some(name),
        },
    })
}

fn authorize(who: &Identity, need: Need) -> Result<(), ApiError> {
    if need == Need::Agent && !who.is_agent() {
        return Err(match who.role {
            None => unauthorized(
                "identity_required",
                "the agent API needs an agent session: send X-AGH-Session-ID",
            ),
            Some(role) => ApiError(Error::forbidden(
                "forbidden_role",
                format!("the agent API needs an agent token; this token's role is {role}"),
            )),
        });
    }
    let allowed = match (who.role, need) {
        (None, _) => true,
        (Some(Role::Operator), Need::Agent) => false,
        (Some(Role::Operator), _) => true,
        (Some(Role::Agent), Need::Approve) => false,
        (Some(Role::Agent), _) => true,
        (Some(Role::Viewer), Need::Read) => true,
        (Some(Role::Viewer), _) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError(Error::forbidden(
            "forbidden_role",
            format!(
                "a {} token may not do this",
                who.role.map(Role::as_str).unwrap_or("")
            ),
        )))
    }
}

/// Middleware: authenticates, authorizes, and hands the [`Identity`] to the handler.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let need = need(req.method(), req.uri().path());
    let result = identify(&state.auth, req.headers(), state.clock.now())
        .and_then(|who| authorize(&who, need).map(|()| who));
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

    fn who(role: Option<Role>, kind: &str) -> Identity {
        Identity {
            actor: Ref::new(kind, "x"),
            agent_name: None,
            role,
            token_name: None,
        }
    }

    #[test]
    fn roles_allow_what_the_spec_says() {
        let op = who(Some(Role::Operator), "human");
        let agent = who(Some(Role::Agent), "agent_session");
        let viewer = who(Some(Role::Viewer), "human");
        assert!(authorize(&op, Need::Approve).is_ok());
        assert!(authorize(&op, Need::Agent).is_err());
        assert!(authorize(&agent, Need::Write).is_ok());
        assert!(authorize(&agent, Need::Approve).is_err());
        assert!(authorize(&agent, Need::Agent).is_ok());
        assert!(authorize(&viewer, Need::Read).is_ok());
        assert!(authorize(&viewer, Need::Write).is_err());
        let open_human = who(None, "human");
        assert_eq!(
            authorize(&open_human, Need::Agent).unwrap_err().0.code(),
            "identity_required"
        );
        assert!(authorize(&who(None, "agent_session"), Need::Approve).is_ok());
    }

    #[test]
    fn needs_follow_method_and_path() {
        assert_eq!(need(&Method::GET, "/api/tasks"), Need::Read);
        assert_eq!(need(&Method::POST, "/api/tasks/t/approve"), Need::Approve);
        assert_eq!(
            need(&Method::POST, "/api/agent/tasks/claim-next"),
            Need::Agent
        );
        assert_eq!(need(&Method::DELETE, "/api/tasks/t"), Need::Write);
        assert_eq!(need(&Method::PATCH, "/api/tasks/approve"), Need::Write);
        assert_eq!(need(&Method::POST, "/api/tasks/approve/start"), Need::Write);
    }
}
