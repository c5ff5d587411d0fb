//! Model providers: where a task's prompt is sent, and how their failures are
//! classified so the queue knows whether to retry.
//!
//! A [`Provider`] is an enum rather than a trait object: there are few kinds,
//! each is plain data plus an HTTP client, and matching keeps calls static.
//! A [`ProviderEntry`](routing::ProviderEntry) wraps one with what the
//! deployment configured for it (its models, its concurrency limit, its
//! default attempt timeout); the [`ModelRouter`](routing::ModelRouter) picks
//! the entry for a model name.

pub mod body;
pub mod config;
pub mod echo;
mod entry;
pub mod openai;
pub mod routing;
pub mod scrub;
pub mod sse;

use std::time::Duration;

use reqwest::StatusCode;

/// What a provider is asked to do: one chat completion.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The model name as the provider knows it.
    pub model: String,
    /// The user's prompt.
    pub prompt: String,
    /// An optional system prompt, sent before the user's.
    pub system: Option<String>,
    /// Sampling temperature, if the task set one.
    pub temperature: Option<f64>,
    /// The most tokens the answer may have, if the task set a limit.
    pub max_tokens: Option<i32>,
}

/// A provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The model's answer.
    pub text: String,
    /// Tokens in the prompt, as the provider counted them.
    pub prompt_tokens: Option<i32>,
    /// Tokens in the answer, as the provider counted them.
    pub completion_tokens: Option<i32>,
}

/// Why a provider call failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderError {
    /// A timeout, a connection error, 408, 409, 429 or 5xx: try again later,
    /// no sooner than `retry_after` when the provider said so.
    Retryable {
        message: String,
        retry_after: Option<Duration>,
        kind: FailureKind,
    },
    /// Any other refusal (400, 401, 403, 404, 422, …): trying again cannot help.
    Permanent { message: String, kind: FailureKind },
}

/// What went wrong with a provider call, in a few fixed kinds (the
/// `outcome` label of `taskrunner_provider_requests_total`); the message says
/// the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No answer in time (the attempt's timeout, or HTTP 408).
    Timeout,
    /// HTTP 429.
    RateLimited,
    /// HTTP 5xx or 409, or a failure the provider reported mid-answer.
    ServerError,
    /// The provider refused the request (4xx), or no provider would take it.
    ClientError,
    /// No connection, or the connection broke before the answer ended.
    Connection,
    /// A 2xx that holds no usable answer (unreadable, empty, too large).
    InvalidResponse,
}

impl ProviderError {
    /// The message recorded in the task's `error`.
    pub fn message(&self) -> &str {
        match self {
            ProviderError::Retryable { message, .. } | ProviderError::Permanent { message, .. } => {
                message
            }
        }
    }

    /// What kind of failure it was.
    pub fn kind(&self) -> FailureKind {
        match self {
            ProviderError::Retryable { kind, .. } | ProviderError::Permanent { kind, .. } => *kind,
        }
    }
}

/// Why a provider could not say which models it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelListError {
    /// It answered 401 or 403: as configured (most often its API key), it
    /// will not serve us, and waiting will not change that.
    Refused { status: StatusCode, message: String },
    /// Anything else (a timeout, no connection, a 5xx, an unreadable list):
    /// it may pass.
    Unavailable { message: String },
}

impl ModelListError {
    /// What went wrong, for the log.
    pub fn message(&self) -> &str {
        match self {
            ModelListError::Refused { message, .. } | ModelListError::Unavailable { message } => {
                message
            }
        }
    }
}

/// A configured provider.
#[derive(Debug, Clone)]
pub enum Provider {
    /// Answers with the prompt; needs no network.
    Echo(echo::EchoProvider),
    /// Any server that speaks OpenAI's chat completions API.
    OpenAi(openai::OpenAiProvider),
}

impl Provider {
    /// Sends one completion request and returns the whole answer.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        self.stream(request, &mut |_| {}).await
    }

    /// Sends one completion request, passing each piece of the answer's text
    /// to `on_text` as the provider writes it. The answer returned is those
    /// pieces in order. `on_text` must not wait: it runs between reads of the
    /// provider's response.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ProviderError> {
        match self {
            Provider::Echo(provider) => provider.stream(request, on_text).await,
            Provider::OpenAi(provider) => provider.stream(request, on_text).await,
        }
    }

    /// The models the provider says it serves, when it can say.
    pub async fn list_models(&self) -> Result<Vec<String>, ModelListError> {
        match self {
            Provider::Echo(_) => Ok(vec![echo::ECHO_MODEL.to_owned()]),
            Provider::OpenAi(provider) => provider.list_models().await,
        }
    }
}
