//! The one error type of Tasklane's business rules. Each variant carries a stable machine code; the
//! HTTP layer maps variants to status codes in a single place (`tasklane-server`'s `error` module).

/// What went wrong, classified by who must act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed but a value is invalid (HTTP 422).
    #[error("{message}")]
    Validation { code: &'static str, message: String },
    /// The request body or a field has the wrong shape (HTTP 400).
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// A referenced task, run or edge does not exist (HTTP 404).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The operation conflicts with the current state (HTTP 409).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A payload exceeds its size limit (HTTP 413).
    #[error("{message}")]
    PayloadTooLarge { message: String },
    /// No or bad credentials (HTTP 401).
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// Authenticated, but not allowed (HTTP 403).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// Storage cannot take the request now; the client may retry (HTTP 503).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A storage failure that is not the client's doing (HTTP 500).
    #[error("storage error: {0}")]
    Storage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn validation(message: impl Into<String>) -> Self {
        Error::Validation {
            code: "validation_failed",
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Error::Conflict {
            code,
            message: message.into(),
        }
    }

    pub fn transition(message: impl Into<String>) -> Self {
        Error::conflict("invalid_transition", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Error::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn task_not_found(id: &str) -> Self {
        Error::not_found("task_not_found", format!("task {id} not found"))
    }

    pub fn run_not_found(id: &str) -> Self {
        Error::not_found("run_not_found", format!("task run {id} not found"))
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Error::PayloadTooLarge {
            message: message.into(),
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Error::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Error::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The stable machine code sent as `code` in error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation { code, .. }
            | Error::BadRequest { code, .. }
            | Error::NotFound { code, .. }
            | Error::Conflict { code, .. }
            | Error::Unauthorized { code, .. }
            | Error::Forbidden { code, .. } => code,
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::Unavailable(_) => "storage_unavailable",
            Error::Storage(_) => "internal_error",
        }
    }
}
