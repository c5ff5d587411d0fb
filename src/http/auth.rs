//! Who an HTTP request acts as: its bearer token when tokens are on, the
//! operator when they are off; and the refusals (401 with
//! `WWW-Authenticate: Bearer`, a GraphQL-shaped body).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::auth::{Authenticator, Principal};
use crate::error::ApiError;

/// How the HTTP surface authenticates.
#[derive(Clone, Default)]
pub struct HttpAuth {
    /// `None`: tokens are off and every request acts as the operator.
    pub authenticator: Option<Authenticator>,
    /// The token `/metrics` asks for; `None`: it is open.
    pub metrics_token: Option<Arc<str>>,
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuth")
            .field("tokens", &self.authenticator.is_some())
            .field("metrics_token", &self.metrics_token.is_some())
            .finish()
    }
}

impl HttpAuth {
    /// Who a request with `headers` acts as, or the response refusing it.
    pub async fn principal(&self, headers: &HeaderMap) -> Result<Principal, Response> {
        self.principal_of(authorization(headers))
            .await
            .map_err(refusal)
    }

    /// Who a request with the `Authorization` value `authorization` acts as.
    pub async fn principal_of(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        match &self.authenticator {
            None => Ok(Principal::operator()),
            Some(authenticator) => authenticator.authenticate(authorization).await,
        }
    }

    /// Whether a scrape of `/metrics` with `headers` may be answered.
    pub fn check_metrics(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        check_metrics_token(self.metrics_token.as_deref(), headers)
    }
}

/// `Ok` when `expected` is unset or `headers` carry `Bearer <expected>`
/// (compared in constant time); UNAUTHENTICATED otherwise.
pub fn check_metrics_token(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let presented = authorization(headers)
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthenticated(
            "/metrics needs the metrics token (Authorization: Bearer <token>)",
        ))
    }
}

/// The layer in front of `/mcp`: puts the request's principal in its
/// extensions, where the MCP handler looks; refuses it (401) when tokens
/// are on and its token is not valid.
pub async fn authenticate_mcp(
    State(auth): State<HttpAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    if auth.authenticator.is_none() {
        return next.run(request).await;
    }
    match auth.principal(request.headers()).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refused) => refused,
    }
}

/// The `Authorization` header's value; a value that is not text reads as
/// empty, which no token matches.
fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default())
}

/// The answer to a request refused before it ran: 401 with
/// `WWW-Authenticate: Bearer` when it is not authenticated, 503 when the
/// database could not say; the body in the GraphQL error shape.
pub fn refusal(error: ApiError) -> Response {
    let status = match &error {
        ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::ServiceUnavailable | ApiError::QueryTimeout => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if let ApiError::Internal(detail) = &error {
        tracing::error!(error = ?detail, "internal error while checking a token");
    }
    let body = json!({
        "errors": [{ "message": error.message(), "extensions": { "code": error.code() } }]
    });
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}
