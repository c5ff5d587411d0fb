//! The provider for any server that speaks OpenAI's chat completions API:
//! OpenAI itself, or a local server such as Ollama, vLLM or llama.cpp.
//!
//! It uses `reqwest` directly rather than async-openai. The queue owns retries
//! and counts every attempt, so one call must be exactly one HTTP request, and
//! we need its raw status code and `Retry-After` header; async-openai's client
//! retries 429 and 5xx by itself, with no bound.
//!
//! A completion has no time limit here but the connect timeout: how long a
//! call may take is the attempt's timeout (the task's `timeoutSeconds`, else
//! the provider's `timeout_seconds`, else `--task-timeout-seconds`; see
//! [`ProviderEntry::attempt_timeout`](crate::providers::routing::ProviderEntry::attempt_timeout)),
//! which the worker enforces around the call; dropping the call's future
//! closes the HTTP request. A client-wide timeout would silently cap every
//! task that allows itself longer. Listing models is different: nothing
//! waits on it but start-up and the refresh, so it has its own short limit.
//!
//! Answers are asked for as a stream (server-sent events), so that their
//! text can be passed on as it is written (see [`stream`]); a server that
//! answers with one JSON body instead works too.
//!
//! Bodies are read with a cap (see [`body`](crate::providers::body)); a
//! streamed answer's text is held to the same cap as a whole one's.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::providers::body::{caps, read_capped, size_text};
use crate::providers::{Completion, CompletionRequest, FailureKind, ModelListError, ProviderError};

mod refusal;
mod stream;

use refusal::{excerpt, is_retryable, provider_message, retry_after};

/// How long to wait for a TCP (and TLS) connection: the only limit on a
/// completion that the client itself sets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most one `GET /models` may take, from connecting to the last byte.
const MODEL_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where an OpenAI-compatible server is and how to talk to it.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// The provider's name, e.g. "openai"; it prefixes every error message.
    pub name: String,
    /// The API root, e.g. `http://localhost:11434/v1`; a trailing slash is tolerated.
    pub base_url: String,
    /// The API key; `None` or empty (as local servers need) sends no `Authorization`.
    pub api_key: Option<String>,
}

// Written out rather than derived so that logging a config never logs its key.
impl fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A client for one OpenAI-compatible server; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    name: String,
    base_url: String,
    api_key: Option<ApiKey>,
    client: reqwest::Client,
}

/// An API key whose `Debug` does not show it.
#[derive(Clone)]
struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A failed call: how the queue should treat it, and the HTTP status when
/// the provider answered (listing models tells a refusal from the rest by it).
struct Failure {
    error: ProviderError,
    status: Option<StatusCode>,
}

impl OpenAiProvider {
    /// Checks the configuration and builds the HTTP client all calls share.
    pub fn new(config: OpenAiConfig) -> anyhow::Result<Self> {
        let base_url = config.base_url.trim().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base_url)
            .with_context(|| format!("{}: invalid base URL {base_url:?}", config.name))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "{}: the base URL {base_url:?} must start with http:// or https://",
            config.name
        );
        // No `.timeout(…)`: see the module documentation.
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("taskrunner/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build the HTTP client")?;
        let api_key = config
            .api_key
            .map(|key| key.trim().to_owned())
            .filter(|key| !key.is_empty())
            .map(ApiKey);
        Ok(OpenAiProvider {
            name: config.name,
            base_url,
            api_key,
            client,
        })
    }

    /// The provider's name, as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The API root, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Asks for one chat completion and returns the whole answer. It takes as
    /// long as the provider takes: bound it from outside.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        self.stream(request, &mut |_| {}).await
    }

    /// Asks for one chat completion as a stream (`POST /chat/completions`
    /// with `"stream": true`), passing each piece of the answer's text to
    /// `on_text` as it arrives; returns the whole answer, which is those
    /// pieces in order. Token usage comes from the stream's last chunk
    /// (`stream_options.include_usage`). A server that answers with one JSON
    /// body instead (some compatible servers ignore `stream`) works too: its
    /// answer is one piece. It takes as long as the provider takes: bound it
    /// from outside; dropping the future closes the request.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ProviderError> {
        let system = request.system.as_ref();
        let system = system.map(|text| json!({"role": "system", "content": text}));
        let user = json!({"role": "user", "content": request.prompt});
        let messages: Vec<_> = system.into_iter().chain([user]).collect();
        let mut body = json!({
            "model": request.model,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let Some(temperature) = request.temperature {
            body["temperature"] = json!(temperature);
        }
        if let Some(max_tokens) = request.max_tokens {
            body["max_tokens"] = json!(max_tokens);
        }
        let url = format!("{}/chat/completions", self.base_url);
        let mut response = self
            .send(self.client.post(url).json(&body))
            .await
            .map_err(|failure| failure.error)?;
        if is_event_stream(response.headers()) {
            return self.read_stream(&mut response, on_text).await;
        }
        let answer: ChatResponse = self
            .read_json(response, caps::ANSWER)
            .await
            .map_err(|failure| failure.error)?;
        let text = answer
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message)
            .and_then(|message| message.content);
        let Some(text) = text else {
            return Err(self.no_answer());
        };
        if !text.is_empty() {
            on_text(&text);
        }
        let usage = answer.usage.unwrap_or_default();
        Ok(Completion {
            text,
            prompt_tokens: usage.prompt_tokens.map(clamp_to_i32),
            completion_tokens: usage.completion_tokens.map(clamp_to_i32),
        })
    }

    /// The ids of the models the server offers (`GET /models`), sorted, within
    /// 10 s. A 401 or 403 is a refusal, told apart from failures that may pass.
    pub async fn list_models(&self) -> Result<Vec<String>, ModelListError> {
        let url = format!("{}/models", self.base_url);
        let request = self.client.get(url).timeout(MODEL_LIST_TIMEOUT);
        let listed = match self.send(request).await {
            Ok(response) => self.read_json(response, caps::MODEL_LIST).await,
            Err(failure) => Err(failure),
        };
        let list: ModelList = listed.map_err(|failure| match failure.status {
            Some(status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)) => {
                ModelListError::Refused {
                    status,
                    message: failure.error.message().to_owned(),
                }
            }
            _ => ModelListError::Unavailable {
                message: failure.error.message().to_owned(),
            },
        })?;
        let mut ids: Vec<String> = list.data.into_iter().map(|model| model.id).collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Sends one request and classifies a refusal (any status but 2xx) by its
    /// status, its `Retry-After` and the provider's explanation; a 2xx
    /// response is returned unread.
    async fn send(&self, request: RequestBuilder) -> Result<reqwest::Response, Failure> {
        let request = match &self.api_key {
            Some(ApiKey(key)) => request.bearer_auth(key), // marks the header sensitive
            None => request,
        };
        let mut response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = retry_after(status, response.headers(), Utc::now());
        let body = read_capped(&mut response, caps::ERROR_BODY)
            .await
            .map_err(|e| self.transport(&e))?;
        let text = body.text();
        let explained = provider_message(&text);
        if explained.is_none() && !text.trim().is_empty() {
            tracing::warn!(
                provider = %self.name,
                %status,
                body = %self.redact(excerpt(&text)),
                "the provider refused the request with a body that is not an API error"
            );
        }
        let message = self.redact(format!(
            "{}: HTTP {}{}",
            self.name,
            status,
            explained.map_or_else(String::new, |m| format!(": {m}")),
        ));
        let kind = match status.as_u16() {
            408 => FailureKind::Timeout,
            429 => FailureKind::RateLimited,
            _ if is_retryable(status) => FailureKind::ServerError,
            _ => FailureKind::ClientError,
        };
        let error = if is_retryable(status) {
            ProviderError::Retryable {
                message,
                retry_after,
                kind,
            }
        } else {
            ProviderError::Permanent { message, kind }
        };
        Err(Failure {
            error,
            status: Some(status),
        })
    }

    /// A failure to send the request or read the answer, which has no status.
    fn transport(&self, error: &reqwest::Error) -> Failure {
        Failure {
            error: self.transport_error(error),
            status: None,
        }
    }

    /// Parses a 2xx body of at most `cap` bytes as `T`.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        mut response: reqwest::Response,
        cap: usize,
    ) -> Result<T, Failure> {
        let status = response.status();
        let too_large = || Failure {
            error: self.too_large(cap),
            status: Some(status),
        };
        // A declared length over the cap fails before a byte is read.
        if response
            .content_length()
            .is_some_and(|length| length > u64::try_from(cap).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let body = read_capped(&mut response, cap)
            .await
            .map_err(|e| self.transport(&e))?;
        if body.cut {
            return Err(too_large());
        }
        // A 2xx we cannot parse is most often a proxy or gateway answering for
        // the provider (an HTML page, a truncated body), which passes; the queue
        // bounds the attempts, so retrying costs little and giving up loses a task.
        serde_json::from_slice(&body.bytes).map_err(|e| Failure {
            error: self.unreadable(e, &body.text()),
            status: Some(status),
        })
    }

    /// The error for an answer larger than `cap` bytes.
    fn too_large(&self, cap: usize) -> ProviderError {
        ProviderError::Permanent {
            message: format!(
                "{}: the provider's answer is larger than {}, the most taskrunner reads",
                self.name,
                size_text(cap)
            ),
            kind: FailureKind::InvalidResponse,
        }
    }

    /// The error for a successful response that holds no answer.
    fn no_answer(&self) -> ProviderError {
        ProviderError::Permanent {
            message: format!("{}: the provider returned no answer", self.name),
            kind: FailureKind::InvalidResponse,
        }
    }

    /// The error for a successful response we cannot read: most often a
    /// proxy or gateway answering for the provider, which passes. The body
    /// goes to the log, not to the task: a proxy's page may name our hosts.
    fn unreadable(&self, error: impl fmt::Display, body: &str) -> ProviderError {
        tracing::warn!(
            provider = %self.name,
            %error,
            body = %self.redact(excerpt(body)),
            "the provider's answer could not be read"
        );
        ProviderError::Retryable {
            message: format!("{}: invalid response from provider: {error}", self.name),
            retry_after: None,
            kind: FailureKind::InvalidResponse,
        }
    }

    /// Classifies a failure to send the request or read the answer. The
    /// message says what happened in words that name no URL, host or port;
    /// the error's own chain (which does) goes to the log.
    fn transport_error(&self, error: &reqwest::Error) -> ProviderError {
        let name = &self.name;
        tracing::warn!(
            provider = %name,
            error = %self.redact(crate::error::error_chain(error)),
            "the request to the provider failed"
        );
        let message = if error.is_connect() && error.is_timeout() {
            let seconds = CONNECT_TIMEOUT.as_secs();
            format!("{name}: cannot connect: no connection within {seconds} s")
        } else if error.is_connect() {
            format!("{name}: cannot connect to the provider")
        } else if error.is_timeout() {
            // Only a model list has a whole-request timeout.
            let seconds = MODEL_LIST_TIMEOUT.as_secs();
            format!("{name}: no answer within {seconds} s")
        } else if error.is_body() || error.is_decode() {
            format!("{name}: the connection broke while the answer was read")
        } else {
            format!("{name}: the request to the provider failed")
        };
        ProviderError::Retryable {
            message,
            retry_after: None,
            kind: if error.is_timeout() {
                FailureKind::Timeout
            } else {
                FailureKind::Connection
            },
        }
    }

    /// Removes the API key from text the provider sent back, in case it echoed
    /// our headers. Short keys are left alone: they would mangle ordinary words.
    fn redact(&self, message: String) -> String {
        match &self.api_key {
            Some(ApiKey(key)) if key.len() >= 8 => message.replace(key.as_str(), "<redacted>"),
            _ => message,
        }
    }
}

/// The parts of a chat completion we use.
#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<AnswerMessage>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<String>,
}

/// Token counts, from a whole answer or a stream's last chunk.
#[derive(Deserialize, Default)]
struct Usage {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
}

/// The body of `GET /models`.
#[derive(Deserialize)]
struct ModelList {
    data: Vec<Model>,
}

#[derive(Deserialize)]
struct Model {
    id: String,
}

/// Whether the response is a stream of server-sent events.
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// A token count as the database stores it; nonsense counts are clamped, not rejected.
fn clamp_to_i32(count: i64) -> i32 {
    i32::try_from(count.max(0)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonsense_token_counts_are_clamped() {
        assert_eq!(clamp_to_i32(-1), 0);
        assert_eq!(clamp_to_i32(i64::MAX), i32::MAX);
        assert_eq!(clamp_to_i32(42), 42);
    }
}
