//! How domain outcomes become GraphQL answers.
//!
//! Domain failures of mutations are data (`success`, `message`, `code`), as
//! the app expects. GraphQL errors are kept for what is not a domain answer:
//! a missing token, or a capability this server does not have yet.

use crate::domain::error::{Failure, FailureKind};
use crate::domain::i18n::Locale;
use async_graphql::{Context, ErrorExtensions};

/// The app's status codes.
pub fn code_of(kind: FailureKind) -> i32 {
    match kind {
        FailureKind::BadInput => 400,
        FailureKind::NotFound => 404,
        FailureKind::Conflict => 409,
        FailureKind::Internal => 500,
        FailureKind::TooManyAttempts => 429,
    }
}

/// `success`/`message`/`code`, the fields every mutation result shares.
#[derive(Debug, Clone)]
pub struct Status {
    pub success: bool,
    pub message: String,
    pub code: i32,
}

impl Status {
    pub fn ok(code: i32, message: impl Into<String>) -> Self {
        Status {
            success: true,
            message: message.into(),
            code,
        }
    }

    pub fn failed(failure: &Failure, locale: Locale) -> Self {
        Status {
            success: false,
            message: failure.message.get(locale).to_owned(),
            code: code_of(failure.kind),
        }
    }
}

/// The language of the request being answered.
pub fn locale(ctx: &Context<'_>) -> Locale {
    ctx.data_opt::<Locale>().copied().unwrap_or_default()
}

/// Picks the request's language for a message given in both.
pub fn say(ctx: &Context<'_>, en: &str, ru: &str) -> String {
    match locale(ctx) {
        Locale::En => en.to_owned(),
        Locale::Ru => ru.to_owned(),
    }
}

/// A field whose capability this server does not provide yet. Never fake
/// data: the app gets an error that names what is missing.
pub fn unavailable(capability: &str) -> async_graphql::Error {
    async_graphql::Error::new(format!("{capability} is not available on this server yet"))
        .extend_with(|_, e| {
            e.set("code", "UNAVAILABLE");
            e.set("capability", capability);
        })
}

/// The error a field gives when the request carries no valid token.
pub fn unauthenticated() -> async_graphql::Error {
    async_graphql::Error::new("You must be authenticated to access this resource.")
        .extend_with(|_, e| e.set("code", "UNAUTHENTICATED"))
}

/// A request-level error (no field to hang it on) with a `code` extension.
pub fn request_error(message: impl Into<String>, code: &str) -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}
