//! A fake OpenAI-compatible provider: a real HTTP server on 127.0.0.1 that
//! answers chat completions according to the prompt, and records every call.
//!
//! Prompts it understands (anything else is echoed back, upper-cased):
//! - `hang` — never answers (until the client goes away);
//! - `hang-once:<x>` — never answers the first call; answers later ones;
//! - `slow:<ms>:<x>` — answers after `ms` milliseconds;
//! - `status:<code>` — answers every call with that HTTP status;
//! - `status:<code>:retry-after:<s>` — the same, with a Retry-After header;
//! - `flaky:<n>:<x>` — answers 500 to the first `n` calls, then succeeds;
//! - `big-error:<code>:<bytes>` — answers that status with a body of `bytes` bytes;
//! - `big-answer:<bytes>` — answers 200 with a body of `bytes` bytes (its length declared);
//! - `endless-error:<code>` / `endless-answer` — that status (or 200) with a
//!   body that never ends and declares no length.
//!
//! A call that asks for a stream (`"stream": true`) gets its answer as
//! server-sent events, a word per chunk, usage in the last chunk, then
//! `[DONE]`; these prompts shape the stream (see [`sse`]):
//! - `stream-slow:<ms>:<x>` — waits `ms` milliseconds before each word after the first;
//! - `stream-cut:<n>:<x>` — ends the body cleanly after `n` words, unfinished;
//! - `stream-break:<n>:<x>` — breaks the connection after `n` words;
//! - `stream-error:<n>:<x>` — sends an error event after `n` words;
//! - `cut-once:<ms>:<x>` — the first call streams half the words slowly and
//!   breaks; later calls stream them all slowly;
//! - `no-stream:<x>` — answers one JSON body even when asked to stream;
//! - `stream-endless` — one event that never ends (no newline, ever).
//!
//! `GET /v1/models` lists `fake-small` and `fake-large` until told otherwise
//! ([`FakeProvider::set_models`], [`FakeProvider::set_models_status`]).
//! Calls in flight are counted, and their most at once recorded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

mod sse;

/// One call the fake received.
#[derive(Debug, Clone)]
pub struct Call {
    pub prompt: String,
    pub at: Instant,
    /// Whether the call asked for a stream with usage in its last chunk.
    pub streamed: bool,
}

struct Record {
    calls: Vec<Call>,
    per_prompt: HashMap<String, usize>,
    /// Calls whose client went away before the answer (the handler was dropped).
    aborted: Vec<String>,
    /// Completions being answered now, and the most there ever were at once.
    in_flight: usize,
    max_in_flight: usize,
    /// What `GET /v1/models` answers.
    models: Vec<String>,
    models_status: u16,
    model_list_calls: usize,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            calls: Vec::new(),
            per_prompt: HashMap::new(),
            aborted: Vec::new(),
            in_flight: 0,
            max_in_flight: 0,
            models: vec!["fake-small".to_owned(), "fake-large".to_owned()],
            models_status: 200,
            model_list_calls: 0,
        }
    }
}

/// The running fake.
#[derive(Clone)]
pub struct FakeProvider {
    pub base_url: String,
    record: Arc<Mutex<Record>>,
}

impl FakeProvider {
    pub async fn start() -> FakeProvider {
        let record = Arc::new(Mutex::new(Record::default()));
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .route("/v1/models", axum::routing::get(models))
            .with_state(Arc::clone(&record));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake provider");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeProvider {
            base_url: format!("http://{address}/v1"),
            record,
        }
    }

    /// Every call so far, in order of arrival.
    pub fn calls(&self) -> Vec<Call> {
        self.record
            .lock()
            .map(|r| r.calls.clone())
            .unwrap_or_default()
    }

    /// How many calls carried `prompt`.
    pub fn calls_for(&self, prompt: &str) -> usize {
        self.record
            .lock()
            .map(|r| r.per_prompt.get(prompt).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Prompts of calls that were abandoned by the client mid-flight.
    pub fn aborted(&self) -> Vec<String> {
        self.record
            .lock()
            .map(|r| r.aborted.clone())
            .unwrap_or_default()
    }

    /// The most completions that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.record.lock().map(|r| r.max_in_flight).unwrap_or(0)
    }

    /// Makes `GET /v1/models` list these models.
    pub fn set_models(&self, models: &[&str]) {
        if let Ok(mut record) = self.record.lock() {
            record.models = models.iter().map(|m| (*m).to_owned()).collect();
        }
    }

    /// Makes `GET /v1/models` answer with this status (200 lists the models;
    /// any other, an OpenAI-shaped error).
    pub fn set_models_status(&self, status: u16) {
        if let Ok(mut record) = self.record.lock() {
            record.models_status = status;
        }
    }

    /// How many times the models were asked for.
    pub fn model_list_calls(&self) -> usize {
        self.record.lock().map(|r| r.model_list_calls).unwrap_or(0)
    }

    /// Waits until `prompt` has been called `n` times.
    pub async fn wait_for_calls(&self, prompt: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.calls_for(prompt) < n {
            assert!(
                Instant::now() < deadline,
                "{prompt:?} was not called {n} times within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Provider settings pointing an OpenAI-compatible provider at this fake,
    /// serving every model name.
    pub fn settings(&self) -> taskrunner::providers::config::ProviderSettings {
        self.settings_with("model_prefixes = [\"\"]\ndiscover_models = false")
    }

    /// Provider settings named `fake` pointing at this fake, with `extra`
    /// TOML lines (routes, limits, timeouts).
    pub fn settings_with(&self, extra: &str) -> taskrunner::providers::config::ProviderSettings {
        let toml = format!("name = \"fake\"\nbase_url = \"{}\"\n{extra}", self.base_url);
        toml::from_str(&toml).expect("fake provider settings")
    }

    /// A model router whose every model goes to this fake.
    pub fn router(&self) -> Arc<taskrunner::providers::routing::ModelRouter> {
        Arc::new(taskrunner::providers::config::router_from(vec![self.settings()]).expect("router"))
    }
}

/// Counts a call out of flight when it ends, and marks it aborted unless it answered.
struct AbortGuard {
    record: Arc<Mutex<Record>>,
    prompt: String,
    answered: bool,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Ok(mut record) = self.record.lock() {
            record.in_flight -= 1;
            if !self.answered {
                record.aborted.push(self.prompt.clone());
            }
        }
    }
}

async fn models(State(record): State<Arc<Mutex<Record>>>) -> Response {
    let Ok(mut record) = record.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    record.model_list_calls += 1;
    if record.models_status != 200 {
        return error(record.models_status, None);
    }
    let data: Vec<Value> = record.models.iter().map(|id| json!({ "id": id })).collect();
    Json(json!({ "object": "list", "data": data })).into_response()
}

async fn complete(
    State(record): State<Arc<Mutex<Record>>>,
    _headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let prompt = body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let streamed =
        body["stream"] == json!(true) && body["stream_options"]["include_usage"] == json!(true);
    let call_number = {
        let Ok(mut record) = record.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        record.calls.push(Call {
            prompt: prompt.clone(),
            at: Instant::now(),
            streamed,
        });
        record.in_flight += 1;
        record.max_in_flight = record.max_in_flight.max(record.in_flight);
        let count = record.per_prompt.entry(prompt.clone()).or_insert(0);
        *count += 1;
        *count
    };
    let mut guard = AbortGuard {
        record,
        prompt: prompt.clone(),
        answered: false,
    };
    let parts: Vec<&str> = prompt.split(':').collect();
    let number = |text: &str| text.parse().unwrap_or(0);
    if streamed && let Some(stream) = sse::Stream::for_prompt(&parts, call_number) {
        // The stream counts the call out of flight when it ends or is dropped.
        return stream.into_response(guard);
    }
    let answer = |text: &str| {
        if streamed {
            sse::Stream::whole(text).body()
        } else {
            answer(text)
        }
    };
    let response = match parts.as_slice() {
        ["hang"] => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            answer("never")
        }
        ["hang-once", rest @ ..] => {
            if call_number == 1 {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            answer(&rest.join(":"))
        }
        ["slow", ms, rest @ ..] => {
            tokio::time::sleep(Duration::from_millis(number(ms))).await;
            answer(&rest.join(":"))
        }
        ["status", code] => error(code.parse().unwrap_or(500), None),
        ["status", code, "retry-after", seconds] => {
            error(code.parse().unwrap_or(500), Some(seconds))
        }
        ["flaky", failures, rest @ ..] => {
            if call_number <= failures.parse().unwrap_or(0) {
                error(500, None)
            } else {
                answer(&rest.join(":"))
            }
        }
        ["big-error", code, bytes] => sized(code.parse().unwrap_or(500), bytes),
        ["big-answer", bytes] => sized(200, bytes),
        ["endless-error", code] => endless(code.parse().unwrap_or(500)),
        ["endless-answer"] => endless(200),
        ["no-stream", rest @ ..] => self::answer(&rest.join(":")),
        ["stream-endless"] if streamed => sse::Stream::endless_event(),
        _ => answer(&prompt.to_uppercase()),
    };
    guard.answered = true;
    response
}

/// The usage every answer reports.
const USAGE: (u32, u32) = (11, 7);

fn answer(text: &str) -> Response {
    Json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": USAGE.0, "completion_tokens": USAGE.1, "total_tokens": USAGE.0 + USAGE.1 }
    }))
    .into_response()
}

fn error(code: u16, retry_after: Option<&str>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Json(
        json!({ "error": { "message": format!("fake provider says {code}"), "type": "test" } }),
    );
    match retry_after {
        Some(seconds) => (status, [("retry-after", seconds.to_owned())], body).into_response(),
        None => (status, body).into_response(),
    }
}

/// A body of `bytes` bytes (its length declared) that starts like an OpenAI
/// answer or error and is then only padding: valid JSON only if it were cut.
fn sized(code: u16, bytes: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let size = bytes.parse().unwrap_or(0);
    let mut body = br#"{"error": {"message": ""#.to_vec();
    body.resize(size.max(body.len()), b'x');
    (status, body).into_response()
}

/// A body that never ends, sent in 64 KiB chunks with no declared length.
fn endless(code: u16) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    let chunks =
        futures_util::stream::repeat_with(move || Ok::<_, std::convert::Infallible>(chunk.clone()));
    (status, Body::from_stream(chunks)).into_response()
}
