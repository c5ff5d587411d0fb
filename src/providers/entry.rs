//! One configured provider: how to call it, which models it serves, how many
//! calls it takes at once, and how long an attempt on it may last by default.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::sync::Semaphore;

use crate::metrics::{Metrics, ProviderOutcome};
use crate::providers::{
    Completion, CompletionRequest, FailureKind, ModelListError, Provider, ProviderError,
};

/// A provider as the deployment configured it.
#[derive(Debug)]
pub struct ProviderEntry {
    /// The provider's name, shown in `models` (e.g. `openai`, `ollama`, `echo`).
    pub name: String,
    /// How to call it. Call [`ProviderEntry::complete`] instead, which keeps
    /// to the concurrency limit.
    pub provider: Provider,
    /// Caps the calls in flight to this provider from this process; taken by
    /// [`ProviderEntry::complete`].
    pub limiter: Arc<Semaphore>,
    /// Model names it serves, exactly.
    pub models: Vec<String>,
    /// Model name prefixes it serves (`gpt-` serves `gpt-4o`).
    pub model_prefixes: Vec<String>,
    /// Whether to ask the provider which models it has.
    pub discover_models: bool,
    /// The provider's `timeout_seconds`: the attempt timeout of tasks that set none.
    attempt_timeout: Option<Duration>,
    discovered: RwLock<Discovery>,
}

/// What the provider last said about its models.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Discovery {
    NotAsked,
    /// Its models, sorted.
    Listed(Vec<String>),
    /// It could not say: with nothing configured either, any name is tried.
    Unavailable,
    /// It refused to say (401, 403): the models it listed before, if any, are
    /// still its own, but it will not run them as configured.
    Refused {
        status: StatusCode,
        last_listed: Vec<String>,
    },
}

/// One provider call being measured: recorded when dropped, with the
/// outcome set once the call ended (`cancelled` if it never did).
struct CallRecord<'a> {
    metrics: &'a Metrics,
    provider: &'a str,
    started: Instant,
    outcome: ProviderOutcome,
}

impl Drop for CallRecord<'_> {
    fn drop(&mut self) {
        self.metrics
            .provider_request(self.provider, self.outcome, self.started.elapsed());
    }
}

/// What a provider's model list says of one model name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claim {
    /// It serves the model.
    Serves,
    /// It would serve the model, but it refused to list its models with this status.
    Refused(StatusCode),
}

impl ProviderEntry {
    /// A provider serving `models` exactly and `model_prefixes` by prefix.
    pub fn new(
        name: impl Into<String>,
        provider: Provider,
        max_concurrency: Option<usize>,
        models: Vec<String>,
        model_prefixes: Vec<String>,
        discover_models: bool,
    ) -> Self {
        ProviderEntry {
            name: name.into(),
            provider,
            limiter: Arc::new(Semaphore::new(
                max_concurrency.map_or(Semaphore::MAX_PERMITS, |n| {
                    n.clamp(1, Semaphore::MAX_PERMITS)
                }),
            )),
            models,
            model_prefixes,
            discover_models,
            attempt_timeout: None,
            discovered: RwLock::new(Discovery::NotAsked),
        }
    }

    /// The same provider, with `timeout` as the attempt timeout of tasks that set none.
    pub fn with_attempt_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// How long one attempt at a task on this provider may take: the task's own
    /// `timeoutSeconds` if it set one, else the provider's `timeout_seconds`
    /// if configured, else `default` (`--task-timeout-seconds`). Nothing else
    /// limits the call: the HTTP client has only a connect timeout.
    pub fn attempt_timeout(
        &self,
        task_timeout_seconds: Option<i32>,
        default: Duration,
    ) -> Duration {
        let task = task_timeout_seconds
            .and_then(|seconds| u64::try_from(seconds).ok())
            .filter(|&seconds| seconds > 0)
            .map(Duration::from_secs);
        task.or(self.attempt_timeout).unwrap_or(default)
    }

    /// Takes a place under the provider's `max_concurrency` (waiting for one
    /// if need be), then sends the request. Dropping the future gives the
    /// place back and closes the HTTP request. No time limit: see
    /// [`ProviderEntry::complete_within`].
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let _place = self.limiter.acquire().await.map_err(|_| self.closed())?;
        self.provider.complete(request).await
    }

    /// Like [`ProviderEntry::complete`], but the call fails (retryably) when
    /// `timeout` passes. The clock starts once a place is taken: waiting
    /// behind other calls to a busy provider is not the task's fault, and
    /// must not spend its attempts.
    pub async fn complete_within(
        &self,
        request: &CompletionRequest,
        timeout: Duration,
    ) -> Result<Completion, ProviderError> {
        self.stream_within(request, timeout, &mut |_| {}).await
    }

    /// Like [`ProviderEntry::complete_within`], passing each piece of the
    /// answer's text to `on_text` as it arrives (see [`Provider::stream`]).
    pub async fn stream_within(
        &self,
        request: &CompletionRequest,
        timeout: Duration,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ProviderError> {
        self.stream_recorded(request, timeout, on_text, None).await
    }

    /// Like [`ProviderEntry::stream_within`], recording the call in `metrics`
    /// (`taskrunner_provider_requests_total` and its duration, from the
    /// moment a place is taken): its outcome, or `cancelled` when the call is
    /// dropped before it ends.
    pub async fn stream_measured(
        &self,
        request: &CompletionRequest,
        timeout: Duration,
        on_text: &mut (dyn FnMut(&str) + Send),
        metrics: &Metrics,
    ) -> Result<Completion, ProviderError> {
        self.stream_recorded(request, timeout, on_text, Some(metrics))
            .await
    }

    async fn stream_recorded(
        &self,
        request: &CompletionRequest,
        timeout: Duration,
        on_text: &mut (dyn FnMut(&str) + Send),
        metrics: Option<&Metrics>,
    ) -> Result<Completion, ProviderError> {
        let _place = self.limiter.acquire().await.map_err(|_| self.closed())?;
        let mut record = metrics.map(|metrics| CallRecord {
            metrics,
            provider: &self.name,
            started: Instant::now(),
            outcome: ProviderOutcome::Cancelled,
        });
        let outcome = self.stream_timed(request, timeout, on_text).await;
        if let Some(record) = &mut record {
            record.outcome = match &outcome {
                Ok(_) => ProviderOutcome::Ok,
                Err(error) => ProviderOutcome::Failed(error.kind()),
            };
        }
        outcome
    }

    async fn stream_timed(
        &self,
        request: &CompletionRequest,
        timeout: Duration,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ProviderError> {
        match tokio::time::timeout(timeout, self.provider.stream(request, on_text)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ProviderError::Retryable {
                message: format!(
                    "{}: the attempt timed out after {} s",
                    self.name,
                    timeout.as_secs_f64()
                ),
                retry_after: None,
                kind: FailureKind::Timeout,
            }),
        }
    }

    /// The error for a limiter that was closed (nothing closes it today).
    fn closed(&self) -> ProviderError {
        ProviderError::Retryable {
            message: format!("{}: the provider is shut down", self.name),
            retry_after: None,
            kind: FailureKind::Connection,
        }
    }

    /// The last word on its models. A poisoned lock still holds a whole
    /// value (writers only assign), so it is read as is.
    fn discovery(&self) -> RwLockReadGuard<'_, Discovery> {
        self.discovered
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether it is configured to serve any model name it is not told about
    /// otherwise: it discovers its models and names none itself.
    fn is_catch_all(&self) -> bool {
        self.discover_models && self.models.is_empty() && self.model_prefixes.is_empty()
    }

    /// What its model list says of `model`, if it says anything.
    pub(super) fn listed_claim(&self, model: &str) -> Option<Claim> {
        let contains = |list: &[String]| {
            list.binary_search_by(|listed| listed.as_str().cmp(model))
                .is_ok()
        };
        match &*self.discovery() {
            Discovery::Listed(list) if contains(list) => Some(Claim::Serves),
            Discovery::Refused {
                status,
                last_listed,
            } if contains(last_listed) => Some(Claim::Refused(*status)),
            _ => None,
        }
    }

    /// Whether it takes any model name: a catch-all that could not list its
    /// models serves anything; one that was refused would have, but cannot.
    pub(super) fn catch_all_claim(&self) -> Option<Claim> {
        if !self.is_catch_all() {
            return None;
        }
        match &*self.discovery() {
            Discovery::Unavailable => Some(Claim::Serves),
            Discovery::Refused { status, .. } => Some(Claim::Refused(*status)),
            Discovery::NotAsked | Discovery::Listed(_) => None,
        }
    }

    /// The models it listed, if its last answer was a list.
    pub(super) fn listed_models(&self) -> Vec<String> {
        match &*self.discovery() {
            Discovery::Listed(list) => list.clone(),
            _ => Vec::new(),
        }
    }

    /// Records the provider's answer to "which models?":
    /// - a list replaces whatever was known (it clears a refusal);
    /// - a refusal (401, 403) replaces it too, keeping the last list so that
    ///   its models are refused by name rather than forgotten;
    /// - any other failure keeps a list or a refusal we had (it may pass, and
    ///   tells nothing new), and otherwise leaves a catch-all serving any name.
    pub(super) fn record_listing(&self, listing: Result<Vec<String>, ModelListError>) {
        let mut discovered = self
            .discovered
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let next = match (listing, &*discovered) {
            (Ok(mut models), _) => {
                models.sort();
                models.dedup();
                tracing::info!(provider = %self.name, models = models.len(), "provider listed its models");
                Discovery::Listed(models)
            }
            (Err(ModelListError::Refused { status, message }), previous) => {
                tracing::error!(
                    provider = %self.name,
                    %status,
                    error = %message,
                    "provider refused to list its models: check its API key; tasks for the models it would serve are refused until it lists them"
                );
                let last_listed = match previous {
                    Discovery::Listed(list) => list.clone(),
                    Discovery::Refused { last_listed, .. } => last_listed.clone(),
                    Discovery::NotAsked | Discovery::Unavailable => Vec::new(),
                };
                Discovery::Refused {
                    status,
                    last_listed,
                }
            }
            (Err(ModelListError::Unavailable { message }), previous) => {
                tracing::warn!(provider = %self.name, error = %message, "provider did not list its models");
                match previous {
                    Discovery::Listed(_) | Discovery::Refused { .. } => return,
                    Discovery::NotAsked | Discovery::Unavailable => {
                        if self.is_catch_all() {
                            tracing::warn!(provider = %self.name, "serving any model name until the provider lists its models");
                        }
                        Discovery::Unavailable
                    }
                }
            }
        };
        *discovered = next;
    }

    /// Sets what the provider said, as a refresh would (for tests of routing).
    #[cfg(test)]
    pub(super) fn set_discovery(&self, discovery: Discovery) {
        *self
            .discovered
            .write()
            .unwrap_or_else(PoisonError::into_inner) = discovery;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::echo::EchoProvider;

    fn entry(timeout: Option<u64>) -> ProviderEntry {
        ProviderEntry::new(
            "p",
            Provider::Echo(EchoProvider::default()),
            None,
            Vec::new(),
            Vec::new(),
            true,
        )
        .with_attempt_timeout(timeout.map(Duration::from_secs))
    }

    #[test]
    fn the_task_then_the_provider_then_the_default_sets_the_attempt_timeout() {
        let default = Duration::from_secs(300);
        let configured = entry(Some(1));
        assert_eq!(
            configured.attempt_timeout(Some(900), default),
            Duration::from_secs(900)
        );
        assert_eq!(
            configured.attempt_timeout(None, default),
            Duration::from_secs(1)
        );
        assert_eq!(entry(None).attempt_timeout(None, default), default);
        assert_eq!(
            entry(None).attempt_timeout(Some(86_400), default),
            Duration::from_secs(86_400)
        );
        // The database refuses these; were one to slip through, it is ignored.
        assert_eq!(
            configured.attempt_timeout(Some(0), default),
            Duration::from_secs(1)
        );
        assert_eq!(entry(None).attempt_timeout(Some(-5), default), default);
    }

    #[test]
    fn a_refusal_replaces_a_list_and_a_passing_failure_keeps_either() {
        let entry = entry(None);
        let refused = || {
            Err(ModelListError::Refused {
                status: StatusCode::UNAUTHORIZED,
                message: "p: HTTP 401 Unauthorized".into(),
            })
        };
        let unavailable = || {
            Err(ModelListError::Unavailable {
                message: "p: HTTP 502 Bad Gateway".into(),
            })
        };
        entry.record_listing(unavailable());
        assert_eq!(entry.catch_all_claim(), Some(Claim::Serves));

        entry.record_listing(Ok(vec!["b".into(), "a".into()]));
        assert_eq!(entry.listed_claim("a"), Some(Claim::Serves));
        assert_eq!(entry.catch_all_claim(), None);

        entry.record_listing(refused());
        let refusal = Some(Claim::Refused(StatusCode::UNAUTHORIZED));
        assert_eq!(entry.listed_claim("a"), refusal);
        assert_eq!(entry.listed_claim("c"), None);
        assert_eq!(entry.catch_all_claim(), refusal);
        assert!(entry.listed_models().is_empty());

        entry.record_listing(unavailable());
        assert_eq!(
            entry.catch_all_claim(),
            refusal,
            "a timeout says nothing new"
        );

        entry.record_listing(Ok(vec!["c".into()]));
        assert_eq!(entry.listed_claim("c"), Some(Claim::Serves));
        assert_eq!(entry.listed_claim("a"), None);
    }
}
