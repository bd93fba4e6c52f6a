//! Domain failures: what went wrong in words a person understands, and the
//! kind of failure, which the API maps onto the app's status codes.

use super::i18n::Text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The caller's input is wrong (400).
    BadInput,
    /// The thing asked for does not exist, or a key did not match (404).
    NotFound,
    /// The request clashes with the server's current state (409).
    Conflict,
    /// Something on the server broke (500).
    Internal,
    /// The client failed authentication too often; not even checked (429).
    TooManyAttempts,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", message.en)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: Text,
}

impl Failure {
    pub fn new(kind: FailureKind, message: Text) -> Self {
        Failure { kind, message }
    }

    pub fn bad_input(en: impl Into<String>, ru: impl Into<String>) -> Self {
        Failure::new(FailureKind::BadInput, Text::new(en, ru))
    }

    pub fn not_found(en: impl Into<String>, ru: impl Into<String>) -> Self {
        Failure::new(FailureKind::NotFound, Text::new(en, ru))
    }

    pub fn conflict(en: impl Into<String>, ru: impl Into<String>) -> Self {
        Failure::new(FailureKind::Conflict, Text::new(en, ru))
    }

    /// An internal error: the details go to the log, the caller gets a
    /// generic sentence (no paths or SQL in the app).
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {error}");
        Failure::new(
            FailureKind::Internal,
            Text::new(
                format!("Internal server error while {context}; see the server log"),
                format!("Внутренняя ошибка сервера ({context}); подробности в журнале сервера"),
            ),
        )
    }
}

pub type Outcome<T> = Result<T, Failure>;
