//! Errors, by layer:
//!
//! - storage functions return [`diesel::QueryResult`]; the pool returns
//!   [`PoolError`](diesel_async::pooled_connection::deadpool::PoolError);
//! - the API turns both, and its own checks, into [`ApiError`]: the one type
//!   whose variants a client may be told, each with a stable `extensions.code`;
//! - start-up and the command line use `anyhow`, whose messages an operator reads.
//!
//! Internal details (SQL, driver messages) are logged with the request id and
//! never sent to a client.

use async_graphql::ErrorExtensions;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::deadpool::PoolError;

use crate::tasks::TaskStatus;
use crate::tasks::validation::InvalidField;

/// Something a client can be told went wrong, with its `extensions.code`.
///
/// Deliberately not `Display`: async-graphql turns any `Display` error into a
/// GraphQL error without a code, so `?` would lose it. The only way out is the
/// `From` below, which sets the code (and logs internal details).
#[derive(Debug)]
pub enum ApiError {
    /// The request broke a rule; `field` names the input at fault.
    BadUserInput { field: String, message: String },
    /// No task has the id given.
    NotFound(i64),
    /// The task's state does not allow the change.
    Conflict {
        id: i64,
        status: TaskStatus,
        action: &'static str,
    },
    /// No valid token came with the request (missing, unknown, expired or
    /// revoked); the message says which in words that reveal no secret.
    Unauthenticated(&'static str),
    /// The token is valid but its role does not allow this.
    Forbidden(&'static str),
    /// The tenant is over one of its quotas; it may try again after
    /// `retry_after_seconds`.
    RateLimited {
        message: String,
        retry_after_seconds: u64,
    },
    /// The database cannot be reached now; the client may try again.
    ServiceUnavailable,
    /// The provider that would run the task refuses to work as configured
    /// (it refused to list its models); the message names it and says why.
    ProviderUnavailable { message: String },
    /// PostgreSQL stopped a statement that ran past the statement timeout:
    /// the request asked for more work than one statement may do.
    QueryTimeout,
    /// Anything else. The detail is logged, never sent.
    Internal(anyhow::Error),
}

impl ApiError {
    /// A rule broken by the input field `field`.
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::BadUserInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The message a client sees.
    pub fn message(&self) -> String {
        match self {
            ApiError::BadUserInput { field, message } => format!("invalid {field}: {message}"),
            ApiError::NotFound(id) => format!("no task has id {id}"),
            ApiError::Conflict { id, status, action } => {
                format!("task {id} is {}; {action}", status.as_str().to_uppercase())
            }
            ApiError::Unauthenticated(why) | ApiError::Forbidden(why) => (*why).to_owned(),
            ApiError::RateLimited { message, .. } => message.clone(),
            ApiError::ServiceUnavailable => {
                "the database is unavailable; try again shortly".to_owned()
            }
            ApiError::ProviderUnavailable { message } => message.clone(),
            ApiError::QueryTimeout => "the query took too long and was stopped; ask for less: \
                 a narrower filter, a smaller page, or fewer totalCount fields"
                .to_owned(),
            ApiError::Internal(_) => "internal error; the server log has the details".to_owned(),
        }
    }

    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadUserInput { .. } => "BAD_USER_INPUT",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Conflict { .. } => "CONFLICT",
            ApiError::Unauthenticated(_) => "UNAUTHENTICATED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            ApiError::ProviderUnavailable { .. } => "PROVIDER_UNAVAILABLE",
            ApiError::QueryTimeout => "QUERY_TIMEOUT",
            ApiError::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }
}

impl From<InvalidField> for ApiError {
    fn from(invalid: InvalidField) -> Self {
        ApiError::BadUserInput {
            field: invalid.field.to_owned(),
            message: invalid.message,
        }
    }
}

impl From<DieselError> for ApiError {
    fn from(error: DieselError) -> Self {
        match &error {
            error if crate::db::is_connection_lost(error) => {
                tracing::warn!(error = %error, "database connection lost");
                ApiError::ServiceUnavailable
            }
            error if crate::db::is_statement_timeout(error) => {
                tracing::warn!(error = %error, "statement stopped by the statement timeout");
                ApiError::QueryTimeout
            }
            DieselError::DatabaseError(DatabaseErrorKind::CheckViolation, info) => {
                match info.constraint_name().and_then(field_of_constraint) {
                    Some((field, rule)) => ApiError::bad_input(field, rule),
                    None => ApiError::Internal(error.into()),
                }
            }
            _ => ApiError::Internal(error.into()),
        }
    }
}

/// The input field and rule behind each CHECK constraint of the `tasks` table,
/// for the rare write that passes our validation but not the database's.
fn field_of_constraint(constraint: &str) -> Option<(&'static str, &'static str)> {
    Some(match constraint {
        "tasks_prompt_not_empty" => ("prompt", "must not be empty"),
        "tasks_prompt_length" => ("prompt", "is too long"),
        "tasks_model_format" => ("model", "is not a valid model name"),
        "tasks_priority_range" => ("priority", "must be between 1 and 10"),
        "tasks_max_attempts_range" => ("maxAttempts", "must be between 1 and 20"),
        "tasks_attempts_within_max" => (
            "maxAttempts",
            "must not be below the attempts the task has already made",
        ),
        _ => return None,
    })
}

impl From<PoolError> for ApiError {
    fn from(error: PoolError) -> Self {
        tracing::warn!(error = %error, "no database connection available");
        ApiError::ServiceUnavailable
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        if let ApiError::Internal(detail) = &error {
            tracing::error!(error = ?detail, "internal error while answering a request");
        }
        let code = error.code();
        let field = match &error {
            ApiError::BadUserInput { field, .. } => Some(field.clone()),
            _ => None,
        };
        let retry_after = match &error {
            ApiError::RateLimited {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            _ => None,
        };
        async_graphql::Error::new(error.message()).extend_with(|_, extensions| {
            extensions.set("code", code);
            if let Some(field) = &field {
                extensions.set("field", field.as_str());
            }
            if let Some(seconds) = retry_after {
                extensions.set("retryAfterSeconds", seconds);
            }
        })
    }
}

/// An error and its causes in one line ("error sending request: tcp connect
/// error: Connection refused"), skipping a cause its parent already quotes.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}
