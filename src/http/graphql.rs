//! GraphQL over HTTP: POST for everything, GET for queries.

use async_graphql::ParseRequestError;
use async_graphql::ServerError;
use async_graphql::parser::types::OperationType;
use async_graphql_axum::rejection::GraphQLRejection;
use async_graphql_axum::{GraphQLRequest, GraphQLResponse};
use axum::Json;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::{HttpState, REQUEST_ID_HEADER};

/// `POST /graphql`.
pub async fn execute_post(
    State(state): State<HttpState>,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    match request {
        Ok(request) => execute(&state, &headers, request.into_inner()).await,
        Err(rejection) => bad_request(rejection),
    }
}

/// `GET /graphql`: a WebSocket upgrade for subscriptions, or a query.
pub async fn get_graphql(
    State(state): State<HttpState>,
    request: axum::extract::Request,
) -> Response {
    if super::subscriptions::wants_upgrade(request.headers()) {
        let (parts, _) = request.into_parts();
        return super::subscriptions::upgrade(state, parts).await;
    }
    let headers = request.headers().clone();
    let graphql = GraphQLRequest::<GraphQLRejection>::from_request(request, &state).await;
    query_over_get(state, headers, graphql).await
}

/// A query over GET; a mutation over GET is refused (405), since GET must be
/// safe to repeat and to prefetch.
async fn query_over_get(
    state: HttpState,
    headers: HeaderMap,
    request: Result<GraphQLRequest, GraphQLRejection>,
) -> Response {
    let request = match request {
        Ok(request) => request.into_inner(),
        Err(rejection) => return bad_request(rejection),
    };
    if is_mutation(&request) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(axum::http::header::ALLOW, "POST")],
            "mutations must be sent with POST",
        )
            .into_response();
    }
    execute(&state, &headers, request).await
}

/// A body that is not a GraphQL request: 400 (413 when too large), with the
/// reason in the usual GraphQL error shape.
fn bad_request(GraphQLRejection(error): GraphQLRejection) -> Response {
    let (status, message) = match &error {
        ParseRequestError::PayloadTooLarge => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is over {} bytes", super::MAX_BODY_BYTES),
        ),
        ParseRequestError::InvalidRequest(cause) => (
            StatusCode::BAD_REQUEST,
            format!("invalid GraphQL request: {cause}"),
        ),
        ParseRequestError::Io(_) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body could not be read (the limit is {} bytes)",
                super::MAX_BODY_BYTES
            ),
        ),
        other => (
            StatusCode::BAD_REQUEST,
            format!("invalid GraphQL request: {other}"),
        ),
    };
    let body =
        json!({ "errors": [{ "message": message, "extensions": { "code": "BAD_REQUEST" } }] });
    (status, Json(body)).into_response()
}

/// Runs `request` as the principal its headers name (401 if they name none
/// when tokens are on).
async fn execute(
    state: &HttpState,
    headers: &HeaderMap,
    request: async_graphql::Request,
) -> Response {
    let request_id = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let principal = match state.auth.principal(headers).await {
        Ok(principal) => principal,
        Err(refused) => return refused,
    };
    let request = request.data(principal);
    let mut response = state.schema.execute(request).await;
    for error in &mut response.errors {
        label(error, &request_id);
    }
    GraphQLResponse::from(response).into_response()
}

/// Gives every error a code (the engine's own errors have none) and the
/// request id, which finds its details in the server's log.
fn label(error: &mut ServerError, request_id: &str) {
    crate::graphql::give_code(error);
    if !request_id.is_empty()
        && let Some(extensions) = error.extensions.as_mut()
    {
        extensions.set("requestId", request_id);
    }
}

/// Whether the operation the request would run is a mutation.
fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false; // execution reports the syntax error
    };
    document.operations.iter().any(|(name, operation)| {
        let selected = match (&request.operation_name, name) {
            (Some(wanted), Some(name)) => wanted.as_str() == name.as_str(),
            _ => true,
        };
        selected && operation.node.ty == OperationType::Mutation
    })
}
