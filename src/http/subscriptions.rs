//! GraphQL subscriptions over WebSocket, on `/graphql` itself: a GET that
//! asks to upgrade is a subscription client, speaking `graphql-transport-ws`
//! (the graphql-ws library's protocol) or the legacy `graphql-ws`
//! (subscriptions-transport-ws); any other GET is a query.

use std::time::Duration;

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use crate::http::{HttpAuth, HttpState, MAX_BODY_BYTES};

/// How long a client may take to send `connection_init` after connecting,
/// and to answer a ping, before the connection is closed.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// The socket's buffers. An idle subscriber costs little more than these, and
/// messages are small: a task with its full prompt and result is the largest.
const READ_BUFFER_BYTES: usize = 1024;
const WRITE_BUFFER_BYTES: usize = 1024;

/// Whether a request asks to become a WebSocket.
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Upgrades the connection and serves subscriptions on it until the client
/// leaves. A protocol the client does not offer, or a malformed upgrade, is
/// refused with the HTTP status the upgrade rules give.
pub async fn upgrade(state: HttpState, mut parts: Parts) -> Response {
    let protocol = match GraphQLProtocol::from_request_parts(&mut parts, &state).await {
        Ok(protocol) => protocol,
        Err(refused) => return refused.into_response(),
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(refused) => return refused.into_response(),
    };
    let schema = state.schema.clone();
    let auth = state.auth.clone();
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(MAX_BODY_BYTES)
        .on_upgrade(move |socket| {
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| accept_connection(auth, payload))
                .keepalive_timeout(KEEPALIVE)
                .serve()
        })
}

/// `connection_init`: where a client's token goes
/// (`{"authorization": "Bearer …"}`). With tokens on, a missing or bad one
/// ends the connection: async-graphql closes a `graphql-transport-ws` socket
/// with 1002 and the reason (a `graphql-ws` one gets `connection_error`).
async fn accept_connection(
    auth: HttpAuth,
    payload: serde_json::Value,
) -> async_graphql::Result<Data> {
    let authorization = payload
        .get("authorization")
        .or_else(|| payload.get("Authorization"))
        .map(|value| value.as_str().unwrap_or_default());
    let principal = auth.principal_of(authorization).await?;
    let mut data = Data::default();
    data.insert(principal);
    Ok(data)
}
