//! Authentication and authorization: who the caller is, and whether its role allows the request.
//!
//! Open mode (loopback only) has no credentials: `X-AGH-Session-ID` names an agent session and
//! anyone else is the local operator. Token mode requires `Authorization: Bearer <token>`; tokens
//! carry a role (operator, agent, viewer) whose rights are the table in `tasklane_core::policy`.
//! Tokens are looked up by hash in a cache refreshed from storage every second; a hash the cache
//! does not know is looked up in storage at once (within a rate limit), so a new token works on
//! its first request. A refresh that finds a token gone signals its revocation to the requests
//! still running with it: open streams end and parked claims answer 401.

use std::collections::HashMap;
use std::future::pending;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tasklane_core::model::{Caller, Ref, Role};
use tasklane_core::policy::{self, Operation};
use tasklane_core::time::Ts;
use tasklane_core::{tokens, Error};
use tokio::sync::watch;

use crate::error::ApiError;
use crate::identity::{header_value, AGENT_HEADER, SESSION_HEADER};
use crate::state::AppState;

/// Storage lookups of unknown token hashes allowed per second; beyond it an unknown token is
/// refused from the cache alone, so a flood of bad tokens cannot load the database. A token
/// refused that way still starts working at the next refresh.
const LOOKUPS_PER_SECOND: u32 = 20;

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

/// The operation a request asks for, by method and path; [`Operation::Other`] for any write the
/// table does not name (the router answers unknown paths with 404 or 405 once that is allowed).
fn operation(method: &Method, path: &str) -> Operation {
    use Operation::*;
    if method == Method::GET || method == Method::HEAD {
        return if path == "/metrics" {
            ReadMetrics
        } else {
            Read
        };
    }
    let segments: Vec<&str> = path.split('/').collect();
    match (method.as_str(), &segments[..]) {
        ("POST", ["", "api", "tasks"]) => CreateTask,
        ("PATCH", ["", "api", "tasks", _]) => UpdateTask,
        ("DELETE", ["", "api", "tasks", _]) => DeleteTask,
        ("DELETE", ["", "api", "tasks", _, "dependencies", _]) => RemoveDependency,
        ("POST", ["", "api", "tasks", _, "triage", "read" | "dismiss" | "archive"]) => Triage,
        ("POST", ["", "api", "tasks", _, action]) => match *action {
            "publish" => PublishTask,
            "approve" => ApproveTask,
            "reject" => RejectTask,
            "start" => StartTask,
            "cancel" => CancelTask,
            "children" => CreateChild,
            "dependencies" => AddDependency,
            "runs" => EnqueueRun,
            _ => Other,
        },
        ("POST", ["", "api", "task-runs", _, action]) => match *action {
            "claim" => ClaimRun,
            "start" => StartRun,
            "attach-session" => AttachSession,
            "complete" => CompleteRun,
            "fail" => FailRun,
            "cancel" => CancelRun,
            _ => Other,
        },
        ("POST", ["", "api", "agent", "tasks", "claim-next"]) => ClaimNext,
        ("POST", ["", "api", "agent", "tasks", "claim-batch"]) => ClaimBatch,
        ("POST", ["", "api", "agent", "tasks", "complete-batch"]) => CompleteBatch,
        ("POST", ["", "api", "agent", "tasks", _, action]) => match *action {
            "heartbeat" => Heartbeat,
            "complete" => AgentComplete,
            "fail" => AgentFail,
            "release" => Release,
            _ => Other,
        },
        _ => Other,
    }
}

#[derive(Clone)]
pub enum AuthMode {
    Open,
    Token(TokenCache),
}

/// A token the server knows, and the signal of its revocation.
struct Known {
    name: String,
    role: Role,
    revoked: watch::Sender<bool>,
    /// The refresh generation when this entry was added: a refresh that began earlier has not
    /// seen the token and must not take it for revoked.
    added_in: u64,
}

/// Known tokens by hash, plus last-use times waiting to be written.
#[derive(Clone, Default)]
pub struct TokenCache {
    by_hash: Arc<RwLock<HashMap<String, Arc<Known>>>>,
    used: Arc<Mutex<HashMap<String, Ts>>>,
    /// Bumped when a refresh starts reading storage.
    generation: Arc<AtomicU64>,
    /// Storage lookups of unknown hashes in the current one-second window.
    lookups: Arc<Mutex<(Option<Instant>, u32)>>,
}

impl TokenCache {
    fn cached(&self, hash: &str) -> Option<Arc<Known>> {
        self.by_hash
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .cloned()
    }

    /// The token with this hash: from the cache, else from storage if the rate limit allows.
    async fn resolve(&self, state: &AppState, hash: &str) -> Result<Option<Arc<Known>>, ApiError> {
        if let Some(known) = self.cached(hash) {
            return Ok(Some(known));
        }
        if !self.may_look_up() {
            return Ok(None);
        }
        let key = hash.to_string();
        let Some(token) = state.store.read(move |r| r.api_token(&key)).await? else {
            return Ok(None);
        };
        let added_in = self.generation.load(Ordering::SeqCst);
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        let known = map.entry(token.token_hash).or_insert_with(|| {
            Arc::new(Known {
                name: token.name,
                role: token.role,
                revoked: watch::channel(false).0,
                added_in,
            })
        });
        Ok(Some(known.clone()))
    }

    fn may_look_up(&self) -> bool {
        let mut window = self.lookups.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if window
            .0
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
        {
            *window = (Some(now), 0);
        }
        if window.1 >= LOOKUPS_PER_SECOND {
            return false;
        }
        window.1 += 1;
        true
    }

    /// Brings the cache in line with what storage holds now, and signals the revocation of every
    /// token that is gone.
    pub async fn refresh(&self, state: &AppState) -> Result<(), Error> {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let tokens = state.store.read(|r| r.api_tokens()).await?;
        let mut map = self.by_hash.write().unwrap_or_else(|p| p.into_inner());
        let mut fresh = HashMap::with_capacity(tokens.len());
        for t in tokens {
            let known = map.remove(&t.token_hash).unwrap_or_else(|| {
                Arc::new(Known {
                    name: t.name,
                    role: t.role,
                    revoked: watch::channel(false).0,
                    added_in: generation,
                })
            });
            fresh.insert(t.token_hash, known);
        }
        for (hash, known) in map.drain() {
            if known.added_in >= generation {
                // Looked up after this refresh read storage: not known to be gone.
                fresh.insert(hash, known);
            } else {
                known.revoked.send_replace(true);
            }
        }
        *map = fresh;
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
    cache
        .used
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(hash, state.clock.now());
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

/// Checks the request's operation against the role table; the agent API also needs an agent
/// session in open mode.
fn authorize(who: &Identity, op: Operation) -> Result<(), ApiError> {
    if op.is_agent_api() && who.role.is_none() && !who.is_agent() {
        return Err(unauthorized(
            "identity_required",
            "the agent API needs an agent session: send X-AGH-Session-ID",
        ));
    }
    if policy::allows(who.role, op) {
        Ok(())
    } else {
        Err(ApiError(policy::forbidden_role(
            who.role,
            &format!("perform {op:?}"),
        )))
    }
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

    fn who(role: Option<Role>, kind: &str) -> Identity {
        Identity {
            actor: Ref::new(kind, "x"),
            agent_name: None,
            role,
            token_name: None,
            revoked: None,
        }
    }

    #[test]
    fn the_agent_api_needs_an_agent_session_in_open_mode() {
        let open_human = who(None, "human");
        let err = authorize(&open_human, Operation::ClaimNext).unwrap_err();
        assert_eq!(err.0.code(), "identity_required");
        assert!(authorize(&who(None, "agent_session"), Operation::ApproveTask).is_ok());
        let op = who(Some(Role::Operator), "human");
        let err = authorize(&op, Operation::ClaimNext).unwrap_err();
        assert_eq!(err.0.code(), "forbidden_role");
    }

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

    #[test]
    fn operations_follow_method_and_path() {
        use Operation::*;
        for (method, path, want) in [
            (Method::GET, "/api/tasks", Read),
            (Method::GET, "/api/tasks/t/stream", Read),
            (Method::GET, "/metrics", ReadMetrics),
            (Method::POST, "/api/tasks", CreateTask),
            (Method::POST, "/api/tasks/t/approve", ApproveTask),
            (Method::PATCH, "/api/tasks/approve", UpdateTask),
            (Method::POST, "/api/tasks/approve/start", StartTask),
            (Method::DELETE, "/api/tasks/t", DeleteTask),
            (
                Method::DELETE,
                "/api/tasks/t/dependencies/u",
                RemoveDependency,
            ),
            (Method::POST, "/api/tasks/t/triage/archive", Triage),
            (Method::POST, "/api/task-runs/r/cancel", CancelRun),
            (Method::POST, "/api/agent/tasks/claim-next", ClaimNext),
            (Method::POST, "/api/agent/tasks/r/release", Release),
            (Method::POST, "/api/agent/tasks/claim-batch", ClaimBatch),
            (
                Method::POST,
                "/api/agent/tasks/complete-batch",
                CompleteBatch,
            ),
            (Method::POST, "/api/no-such-endpoint", Other),
            (Method::POST, "/api/tasks/t/unknown", Other),
        ] {
            assert_eq!(operation(&method, path), want, "{method} {path}");
        }
    }
}
