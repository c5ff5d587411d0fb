//! Which provider serves which model: exact names and prefixes from the
//! configuration, and the models each provider lists at `GET /models`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::providers::{Completion, CompletionRequest, Provider, ProviderError};

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

/// What the provider said about its models.
#[derive(Debug, Clone, PartialEq)]
enum Discovery {
    NotAsked,
    Listed(Vec<String>),
    /// It could not say: with nothing configured either, any name is tried.
    Unavailable,
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
        let _place = self.limiter.acquire().await.map_err(|_| self.closed())?;
        match tokio::time::timeout(timeout, self.provider.complete(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(ProviderError::Retryable {
                message: format!(
                    "{}: the attempt timed out after {} s",
                    self.name,
                    timeout.as_secs_f64()
                ),
                retry_after: None,
            }),
        }
    }

    /// The error for a limiter that was closed (nothing closes it today).
    fn closed(&self) -> ProviderError {
        ProviderError::Retryable {
            message: format!("{}: the provider is shut down", self.name),
            retry_after: None,
        }
    }

    fn discovery(&self) -> Discovery {
        self.discovered
            .read()
            .map(|d| d.clone())
            .unwrap_or(Discovery::Unavailable)
    }

    /// Whether it serves any model name (it could not list its models and
    /// none are configured).
    fn serves_anything(&self) -> bool {
        self.discover_models
            && self.models.is_empty()
            && self.model_prefixes.is_empty()
            && self.discovery() == Discovery::Unavailable
    }
}

/// A model a deployment can run, and who runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model's name; `prefix*` for a prefix route, `*` for any name.
    pub name: String,
    /// The provider that runs it.
    pub provider: String,
}

/// Routes model names to providers.
#[derive(Debug, Default)]
pub struct ModelRouter {
    providers: Vec<Arc<ProviderEntry>>,
}

impl ModelRouter {
    /// A router over `providers`; earlier ones win ties.
    pub fn new(providers: Vec<ProviderEntry>) -> Self {
        ModelRouter {
            providers: providers.into_iter().map(Arc::new).collect(),
        }
    }

    /// The provider that serves `model`: an exact name first, then the longest
    /// matching prefix, then a listed model, then a provider that serves anything.
    pub fn resolve(&self, model: &str) -> Option<Arc<ProviderEntry>> {
        let exact = self
            .providers
            .iter()
            .find(|entry| entry.models.iter().any(|m| m == model));
        let prefixed = || {
            self.providers
                .iter()
                .filter_map(|entry| {
                    entry
                        .model_prefixes
                        .iter()
                        .filter(|prefix| model.starts_with(prefix.as_str()))
                        .map(|prefix| (prefix.len(), entry))
                        .max_by_key(|(len, _)| *len)
                })
                .max_by_key(|(len, _)| *len)
                .map(|(_, entry)| entry)
        };
        let listed = || {
            self.providers.iter().find(|entry| {
                matches!(entry.discovery(), Discovery::Listed(models) if models.iter().any(|m| m == model))
            })
        };
        let anything = || self.providers.iter().find(|entry| entry.serves_anything());
        exact
            .or_else(prefixed)
            .or_else(listed)
            .or_else(anything)
            .cloned()
    }

    /// Every model the deployment can run, by provider.
    pub fn models(&self) -> Vec<ModelInfo> {
        let mut models = Vec::new();
        for entry in &self.providers {
            let info = |name: String| ModelInfo {
                name,
                provider: entry.name.clone(),
            };
            models.extend(entry.models.iter().cloned().map(info));
            models.extend(entry.model_prefixes.iter().map(|p| info(format!("{p}*"))));
            if let Discovery::Listed(listed) = entry.discovery() {
                models.extend(
                    listed
                        .into_iter()
                        .filter(|m| !entry.models.contains(m))
                        .map(info),
                );
            }
            if entry.serves_anything() {
                models.push(info("*".to_owned()));
            }
        }
        models
    }

    /// Asks each provider that lists its models for them. A provider that
    /// cannot answer keeps its last list, or if it never had one, serves any
    /// name (and the log says so).
    pub async fn refresh(&self, timeout: Duration) {
        for entry in self.providers.iter().filter(|e| e.discover_models) {
            let listed = tokio::time::timeout(timeout, entry.provider.list_models()).await;
            let next = match listed {
                Ok(Ok(models)) => {
                    tracing::info!(provider = %entry.name, models = models.len(), "provider listed its models");
                    Discovery::Listed(models)
                }
                Ok(Err(error)) => {
                    tracing::warn!(provider = %entry.name, error = error.message(), "provider did not list its models");
                    Discovery::Unavailable
                }
                Err(_) => {
                    tracing::warn!(provider = %entry.name, "provider did not list its models in time");
                    Discovery::Unavailable
                }
            };
            let Ok(mut discovered) = entry.discovered.write() else {
                continue;
            };
            match (&*discovered, next) {
                // Keep a list we had over a passing failure.
                (Discovery::Listed(_), Discovery::Unavailable) => {}
                (_, next) => {
                    if next == Discovery::Unavailable
                        && entry.models.is_empty()
                        && entry.model_prefixes.is_empty()
                    {
                        tracing::warn!(provider = %entry.name, "serving any model name until the provider lists its models");
                    }
                    *discovered = next;
                }
            }
        }
    }

    /// A message for a model no provider serves, naming some that are served.
    pub fn unknown_model_message(&self, model: &str) -> String {
        const SHOWN: usize = 20;
        let names: Vec<String> = self.models().into_iter().map(|m| m.name).collect();
        let mut list = names
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if names.len() > SHOWN {
            list.push_str(&format!(
                ", … ({} in all; see the `models` query)",
                names.len()
            ));
        }
        format!("no provider serves model {model:?}; known models: {list}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::echo::EchoProvider;

    fn entry(name: &str, models: &[&str], prefixes: &[&str], discover: bool) -> ProviderEntry {
        ProviderEntry::new(
            name,
            Provider::Echo(EchoProvider),
            Some(4),
            models.iter().map(|m| m.to_string()).collect(),
            prefixes.iter().map(|p| p.to_string()).collect(),
            discover,
        )
    }

    #[test]
    fn exact_names_beat_prefixes_and_longer_prefixes_win() {
        let router = ModelRouter::new(vec![
            entry("a", &[], &["gpt-"], false),
            entry("b", &["gpt-4o"], &["gpt-4o-mini"], false),
        ]);
        let name = |m: &str| router.resolve(m).map(|e| e.name.clone());
        assert_eq!(name("gpt-4o").as_deref(), Some("b"));
        assert_eq!(name("gpt-4o-mini-2024").as_deref(), Some("b"));
        assert_eq!(name("gpt-3.5").as_deref(), Some("a"));
        assert_eq!(name("llama3"), None);
    }

    #[test]
    fn the_task_then_the_provider_then_the_default_sets_the_attempt_timeout() {
        let default = Duration::from_secs(300);
        let configured =
            entry("p", &[], &[], true).with_attempt_timeout(Some(Duration::from_secs(1)));
        let plain = entry("p", &[], &[], true);
        assert_eq!(
            configured.attempt_timeout(Some(900), default),
            Duration::from_secs(900)
        );
        assert_eq!(
            configured.attempt_timeout(None, default),
            Duration::from_secs(1)
        );
        assert_eq!(plain.attempt_timeout(None, default), default);
        assert_eq!(
            plain.attempt_timeout(Some(86_400), default),
            Duration::from_secs(86_400)
        );
        // The database refuses these; were one to slip through, it is ignored.
        assert_eq!(
            configured.attempt_timeout(Some(0), default),
            Duration::from_secs(1)
        );
        assert_eq!(plain.attempt_timeout(Some(-5), default), default);
    }

    #[test]
    fn a_provider_that_cannot_list_serves_anything_until_it_can() {
        let router = ModelRouter::new(vec![entry("local", &[], &[], true)]);
        assert!(router.resolve("whatever").is_none(), "not asked yet");
        if let Ok(mut d) = router.providers[0].discovered.write() {
            *d = Discovery::Unavailable;
        }
        assert!(router.resolve("whatever").is_some());
        assert_eq!(router.models()[0].name, "*");
        if let Ok(mut d) = router.providers[0].discovered.write() {
            *d = Discovery::Listed(vec!["llama3".into()]);
        }
        assert!(router.resolve("whatever").is_none());
        assert!(router.resolve("llama3").is_some());
    }
}
