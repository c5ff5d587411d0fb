//! The benchmark's subscriber: one `graphql-transport-ws` connection to the
//! serve process, following one task's `taskOutput` at a time.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Subscriber {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Subscriber {
    pub async fn connect(address: &str) -> anyhow::Result<Subscriber> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let socket = loop {
            let mut request = format!("ws://{address}/graphql").into_client_request()?;
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static("graphql-transport-ws"),
            );
            match tokio_tungstenite::connect_async(request).await {
                Ok((socket, _)) => break socket,
                Err(error) if Instant::now() > deadline => {
                    bail!("cannot reach the serve process: {error}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let mut subscriber = Subscriber { socket, next_id: 1 };
        subscriber
            .send(json!({ "type": "connection_init", "payload": {} }))
            .await?;
        let ack = subscriber.receive(Duration::from_secs(10)).await?;
        if ack["type"] != "connection_ack" {
            bail!("no connection_ack: {ack}");
        }
        Ok(subscriber)
    }

    /// Subscribes to task `id`'s answer.
    pub async fn subscribe(&mut self, id: i64) -> anyhow::Result<()> {
        let sub = self.next_id.to_string();
        self.next_id += 1;
        self.send(json!({
            "id": sub,
            "type": "subscribe",
            "payload": {
                "query": "subscription($id: ID!) { taskOutput(id: $id) { attempt text done } }",
                "variables": { "id": id.to_string() }
            }
        }))
        .await
    }

    /// Waits for the first chunk with text; returns when it came.
    pub async fn first_chunk(&mut self, within: Duration) -> anyhow::Result<Instant> {
        loop {
            let message = self.receive(within).await?;
            let at = Instant::now();
            match message["type"].as_str() {
                Some("next") => {
                    let text = message["payload"]["data"]["taskOutput"]["text"].as_str();
                    if text.is_some_and(|text| !text.is_empty()) {
                        return Ok(at);
                    }
                    if text.is_none() {
                        bail!("not a chunk: {message}");
                    }
                }
                _ => bail!("the subscription ended before any text: {message}"),
            }
        }
    }

    /// Reads the subscription to its end; returns when its last chunk with
    /// text came (`None` if none did).
    pub async fn finish(&mut self, within: Duration) -> anyhow::Result<Option<Instant>> {
        let mut last_text = None;
        loop {
            let message = self.receive(within).await?;
            match message["type"].as_str() {
                Some("next") => {
                    let text = message["payload"]["data"]["taskOutput"]["text"].as_str();
                    if text.is_some_and(|text| !text.is_empty()) {
                        last_text = Some(Instant::now());
                    }
                }
                Some("complete") => return Ok(last_text),
                _ => bail!("the subscription failed: {message}"),
            }
        }
    }

    async fn send(&mut self, message: Value) -> anyhow::Result<()> {
        self.socket.send(Message::text(message.to_string())).await?;
        Ok(())
    }

    async fn receive(&mut self, within: Duration) -> anyhow::Result<Value> {
        loop {
            let message = tokio::time::timeout(within, self.socket.next())
                .await
                .context("no message in time")?
                .context("the socket closed")??;
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text)?;
                if !matches!(value["type"].as_str(), Some("ping" | "pong" | "ka")) {
                    return Ok(value);
                }
            }
        }
    }
}
