//! The benchmark's provider: an OpenAI-compatible server that streams every
//! answer as server-sent events, its first piece at once and the rest
//! `gap` apart, recording when each call arrived.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use serde_json::{Value, json};

type Arrivals = Arc<Mutex<HashMap<String, Instant>>>;

pub struct StreamingFake {
    pub base_url: String,
    arrivals: Arrivals,
    pieces: usize,
}

#[derive(Clone)]
struct Shape {
    arrivals: Arrivals,
    /// Pieces after the first.
    more: usize,
    gap: Duration,
}

impl StreamingFake {
    /// A fake whose answers are one piece and `more` pieces `gap` apart.
    pub async fn start(more: usize, gap: Duration) -> anyhow::Result<StreamingFake> {
        let arrivals: Arrivals = Arc::new(Mutex::new(HashMap::new()));
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .route(
                "/v1/models",
                axum::routing::get(|| async { Json(json!({ "data": [{ "id": "fake-model" }] })) }),
            )
            .with_state(Shape {
                arrivals: Arc::clone(&arrivals),
                more,
                gap,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        // Each piece goes out as it is written, as a provider's does: without
        // TCP_NODELAY, a piece written right after the response's headers on a
        // reused connection waits for their ACK (40 ms of delayed ACK).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StreamingFake {
            base_url,
            arrivals,
            pieces: more + 1,
        })
    }

    /// When `prompt`'s call arrived.
    pub async fn wait_for(&self, prompt: &str, within: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self
                .arrivals
                .lock()
                .ok()
                .and_then(|a| a.get(prompt).copied())
            {
                return Ok(at);
            }
            if Instant::now() > deadline {
                bail!("{prompt:?} never reached the provider");
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }

    /// The length of the answer to `prompt`, in bytes.
    pub fn answer_len(&self, prompt: &str) -> usize {
        (0..self.pieces).map(|i| piece(prompt, i).len()).sum()
    }
}

/// The `i`th piece of the answer to `prompt`.
fn piece(prompt: &str, i: usize) -> String {
    format!("{prompt} piece {i}. ")
}

async fn complete(State(shape): State<Shape>, Json(body): Json<Value>) -> Response {
    let prompt = body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut arrivals) = shape.arrivals.lock() {
        arrivals.insert(prompt.clone(), Instant::now());
    }
    let event = |data: Value| Ok::<_, Infallible>(Bytes::from(format!("data: {data}\n\n")));
    let pieces = (0..=shape.more).map(move |i| {
        let wait = if i == 0 { Duration::ZERO } else { shape.gap };
        let text = piece(&prompt, i);
        (
            wait,
            event(json!({ "choices": [{ "index": 0, "delta": { "content": text } }] })),
        )
    });
    let end = [
        event(json!({ "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] })),
        event(json!({ "choices": [], "usage": { "prompt_tokens": 1, "completion_tokens": 1 } })),
        Ok(Bytes::from_static(b"data: [DONE]\n\n")),
    ]
    .into_iter()
    .map(|event| (Duration::ZERO, event));
    let events = pieces.chain(end);
    let body = futures_util::stream::unfold(events, |mut events| async move {
        let (wait, event) = events.next()?;
        tokio::time::sleep(wait).await;
        Some((event, events))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(body),
    )
        .into_response()
}
