//! A GraphQL-over-WebSocket client for tests: `graphql-transport-ws` (the
//! graphql-ws library's protocol) or the legacy `graphql-ws`
//! (subscriptions-transport-ws), over a real socket.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The two protocols a client may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws`: subscribe/next/error/complete.
    TransportWs,
    /// The legacy `graphql-ws`: start/data/error/complete, `ka` keep-alives.
    LegacyWs,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::LegacyWs => "graphql-ws",
        }
    }
}

/// What the server sent for one subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A result (`data`, maybe `errors`).
    Next(Value),
    /// The subscription failed (a list of GraphQL errors).
    Error(Value),
    /// The subscription ended.
    Complete,
}

/// One connection.
pub struct WsClient {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: Protocol,
    next_id: u64,
}

impl WsClient {
    /// Connects to `ws://{address}/graphql` and completes `connection_init`
    /// with a token in the payload, as clients will send one.
    pub async fn connect(address: &str, protocol: Protocol) -> WsClient {
        let mut request = format!("ws://{address}/graphql")
            .into_client_request()
            .expect("a WebSocket request");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(protocol.name()),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the WebSocket upgrade succeeds");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok()),
            Some(protocol.name()),
            "the server chose the client's protocol"
        );
        let mut client = WsClient {
            socket,
            protocol,
            next_id: 1,
        };
        client
            .send(json!({
                "type": "connection_init",
                "payload": { "authorization": "Bearer trk_not_checked_yet" }
            }))
            .await;
        let ack = client.receive(Duration::from_secs(10)).await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        client
    }

    /// Starts a subscription; returns its id.
    pub async fn subscribe(&mut self, query: &str, variables: Value) -> String {
        let id = self.next_id.to_string();
        self.next_id += 1;
        let kind = match self.protocol {
            Protocol::TransportWs => "subscribe",
            Protocol::LegacyWs => "start",
        };
        self.send(json!({
            "id": id,
            "type": kind,
            "payload": { "query": query, "variables": variables }
        }))
        .await;
        id
    }

    /// Ends a subscription from the client's side.
    pub async fn unsubscribe(&mut self, id: &str) {
        let kind = match self.protocol {
            Protocol::TransportWs => "complete",
            Protocol::LegacyWs => "stop",
        };
        self.send(json!({ "id": id, "type": kind })).await;
    }

    /// The next message for subscription `id` (others' are dropped), within `within`.
    pub async fn next_for(&mut self, id: &str, within: Duration) -> Received {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.receive(left).await;
            if message["id"] != id {
                continue;
            }
            let payload = message["payload"].clone();
            return match message["type"].as_str() {
                Some("next" | "data") => Received::Next(payload),
                Some("error") => Received::Error(payload),
                Some("complete") => Received::Complete,
                other => panic!("unexpected message type {other:?}: {message}"),
            };
        }
    }

    /// Every result of subscription `id` until it completes (or fails).
    pub async fn collect_until_complete(&mut self, id: &str, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        let mut received = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = self.next_for(id, left).await;
            let done = !matches!(next, Received::Next(_));
            received.push(next);
            if done {
                return received;
            }
        }
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::text(message.to_string()))
            .await
            .expect("the socket accepts a message");
    }

    /// The next protocol message that is not a keep-alive, within `within`.
    pub async fn receive(&mut self, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no message within {within:?}"))
                .expect("the socket is open")
                .expect("a WebSocket message");
            let text = match message {
                Message::Text(text) => text.to_string(),
                Message::Close(frame) => panic!("the server closed the socket: {frame:?}"),
                _ => continue,
            };
            let value: Value = serde_json::from_str(&text).expect("messages are JSON");
            match value["type"].as_str() {
                Some("ka" | "ping" | "pong") => continue,
                _ => return value,
            }
        }
    }
}
