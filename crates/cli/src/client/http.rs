//! The HTTP side of the client: one `reqwest` client carrying the caller's credentials, and the
//! mapping from what happened on the wire to the exit codes scripts rely on.

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::Value;

use super::Connection;

/// Exit codes of the client commands besides 0 (listed in `tasklane --help` and the README).
pub mod exit {
    pub const SERVER_ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const CANNOT_CONNECT: u8 = 3;
    pub const NO_WORK: u8 = 4;
}

/// Why a client command did not succeed; each kind has its own exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The server answered with an error: its message and stable code.
    #[error("{message} ({code}, HTTP {status})")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("no work to claim")]
    NoWork,
    #[error("{0}")]
    Other(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Server { .. } | Failure::Other(_) => exit::SERVER_ERROR,
            Failure::Connect { .. } => exit::CANNOT_CONNECT,
            Failure::Usage(_) => exit::USAGE,
            Failure::NoWork => exit::NO_WORK,
        }
    }

    /// An error answer, read from the server's `{"error","code"}` body when it has one.
    pub fn from_answer(status: StatusCode, body: &str) -> Failure {
        let parsed: Option<Value> = serde_json::from_str(body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(name))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Failure::Server {
            status: status.as_u16(),
            code: field("code").unwrap_or_else(|| "http_error".to_string()),
            message: field("error").unwrap_or_else(|| {
                status
                    .canonical_reason()
                    .unwrap_or("unexpected answer")
                    .to_string()
            }),
        }
    }
}

pub type Outcome<T = ()> = Result<T, Failure>;

/// A successful answer: its status and body exactly as received.
pub struct Answer {
    pub status: StatusCode,
    pub text: String,
}

/// A connection to one server, with the caller's token and (for agent commands) session id.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    session: Option<String>,
}

impl Client {
    pub fn new(conn: &Connection, send_session: bool) -> Outcome<Client> {
        let base = Url::parse(&conn.url)
            .map_err(|e| Failure::Usage(format!("--url {:?} is not a URL: {e}", conn.url)))?;
        if !matches!(base.scheme(), "http") {
            return Err(Failure::Usage(format!(
                "--url {:?}: only http:// URLs are supported",
                conn.url
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .user_agent(concat!("tasklane-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Other(format!("building the HTTP client failed: {e}")))?;
        Ok(Client {
            http,
            base,
            token: conn.token.clone().filter(|t| !t.is_empty()),
            session: conn
                .session
                .clone()
                .filter(|s| send_session && !s.is_empty()),
        })
    }

    /// `/api/<segments…>` under the base URL, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("an http URL always has a path");
            path.pop_if_empty().push("api").extend(segments);
        }
        url
    }

    /// A request with the caller's credentials.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let mut req = self.http.request(method, url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(session) = &self.session {
            req = req.header("X-AGH-Session-ID", session);
        }
        req
    }

    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Outcome<Answer> {
        self.send(self.request(Method::GET, self.url(segments)).query(query))
            .await
    }

    pub async fn post(&self, segments: &[&str], body: Option<Value>) -> Outcome<Answer> {
        self.send_json(Method::POST, segments, body).await
    }

    pub async fn patch(&self, segments: &[&str], body: Value) -> Outcome<Answer> {
        self.send_json(Method::PATCH, segments, Some(body)).await
    }

    pub async fn delete(&self, segments: &[&str]) -> Outcome<Answer> {
        self.send(self.request(Method::DELETE, self.url(segments)))
            .await
    }

    async fn send_json(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<Value>,
    ) -> Outcome<Answer> {
        let mut req = self.request(method, self.url(segments));
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Sends a request; a 2xx is an `Answer`, anything else a `Failure`.
    pub async fn send(&self, req: RequestBuilder) -> Outcome<Answer> {
        let response = req.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            Ok(Answer { status, text })
        } else {
            Err(Failure::from_answer(status, &text))
        }
    }

    /// A request that never got an answer: the server could not be reached, or went away.
    pub fn transport(&self, e: reqwest::Error) -> Failure {
        if e.is_connect() || e.is_timeout() || e.is_request() {
            Failure::Connect {
                url: self.base.to_string(),
                reason: root_cause(&e),
            }
        } else {
            Failure::Other(format!(
                "talking to {} failed: {}",
                self.base,
                root_cause(&e)
            ))
        }
    }
}

/// The innermost error message (reqwest's own says only "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
