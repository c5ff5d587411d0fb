//! Which provider serves which model: exact names and prefixes from the
//! configuration, and the models each provider lists at `GET /models`.
//!
//! A provider that names no models itself and cannot list them (a timeout, a
//! 5xx) serves any name, so that a passing outage does not refuse all work.
//! One that *refused* to list them (401, 403) does not: its key is wrong, and
//! every task sent to it would fail, so [`ModelRouter::route`] says so at once.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;

use crate::providers::entry::Claim;
pub use crate::providers::entry::ProviderEntry;
use crate::providers::{FailureKind, ModelListError, ProviderError};

/// A model a deployment can run, and who runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model's name; `prefix*` for a prefix route, `*` for any name.
    pub name: String,
    /// The provider that runs it.
    pub provider: String,
}

/// Why a model name has no provider to run it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// No provider serves the name; the message names some that are served.
    #[error("{message}")]
    NoProvider { model: String, message: String },
    /// The provider that would serve it refused to list its models with
    /// this status (401, 403): as configured, it will not run anything.
    #[error("provider {provider:?} refused to list its models (HTTP {status}): check its API key")]
    ProviderRefused {
        provider: String,
        status: StatusCode,
    },
}

impl Unroutable {
    /// What to tell a client, or record in a task's `error`.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// How the queue treats a task it cannot route: no provider for the name
/// will not change by retrying; a refusal may, once the provider's key or
/// permissions are fixed (the next successful refresh clears it).
impl From<Unroutable> for ProviderError {
    fn from(unroutable: Unroutable) -> Self {
        match unroutable {
            Unroutable::NoProvider { message, .. } => ProviderError::Permanent {
                message,
                kind: FailureKind::ClientError,
            },
            refused @ Unroutable::ProviderRefused { .. } => ProviderError::Retryable {
                message: refused.message(),
                retry_after: None,
                kind: FailureKind::ClientError,
            },
        }
    }
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

    /// The provider that runs `model`: a configured exact name first, then the
    /// longest configured prefix, then the first provider whose model list has
    /// it, then the first provider that serves any name. A provider that
    /// refused to list its models still takes its place in that order, but
    /// the answer is then why not ([`Unroutable::ProviderRefused`]).
    pub fn route(&self, model: &str) -> Result<Arc<ProviderEntry>, Unroutable> {
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
                // The first of equally long prefixes wins (max_by_key keeps the last).
                .rev()
                .max_by_key(|(len, _)| *len)
                .map(|(_, entry)| entry)
        };
        if let Some(entry) = exact.or_else(prefixed) {
            return Ok(Arc::clone(entry));
        }
        let claimed = self
            .providers
            .iter()
            .find_map(|entry| entry.listed_claim(model).map(|claim| (entry, claim)))
            .or_else(|| {
                self.providers
                    .iter()
                    .find_map(|entry| entry.catch_all_claim().map(|claim| (entry, claim)))
            });
        match claimed {
            Some((entry, Claim::Serves)) => Ok(Arc::clone(entry)),
            Some((entry, Claim::Refused(status))) => Err(Unroutable::ProviderRefused {
                provider: entry.name.clone(),
                status,
            }),
            None => Err(Unroutable::NoProvider {
                model: model.to_owned(),
                message: self.unknown_model_message(model),
            }),
        }
    }

    /// The provider that runs `model`, if one will. Prefer
    /// [`ModelRouter::route`], which also says why not.
    pub fn resolve(&self, model: &str) -> Option<Arc<ProviderEntry>> {
        self.route(model).ok()
    }

    /// Every model the deployment can run, by provider. A provider that
    /// refused to list its models shows only what is configured for it.
    pub fn models(&self) -> Vec<ModelInfo> {
        let mut models = Vec::new();
        for entry in &self.providers {
            let info = |name: String| ModelInfo {
                name,
                provider: entry.name.clone(),
            };
            models.extend(entry.models.iter().cloned().map(info));
            models.extend(entry.model_prefixes.iter().map(|p| info(format!("{p}*"))));
            models.extend(
                entry
                    .listed_models()
                    .into_iter()
                    .filter(|m| !entry.models.contains(m))
                    .map(info),
            );
            if entry.catch_all_claim() == Some(Claim::Serves) {
                models.push(info("*".to_owned()));
            }
        }
        models
    }

    /// Asks each provider that lists its models for them, each within
    /// `timeout` (and the provider's own limit on listing). A list replaces
    /// the last one; a refusal (401, 403) is recorded, and the models that
    /// provider would serve are refused until a later refresh gets a list;
    /// any other failure keeps what was known, and a provider that never
    /// listed its models and names none serves any name (the log says so).
    pub async fn refresh(&self, timeout: Duration) {
        for entry in self.providers.iter().filter(|e| e.discover_models) {
            let listing = tokio::time::timeout(timeout, entry.provider.list_models())
                .await
                .unwrap_or_else(|_| {
                    Err(ModelListError::Unavailable {
                        message: format!(
                            "{}: no model list within {} s",
                            entry.name,
                            timeout.as_secs_f64()
                        ),
                    })
                });
            entry.record_listing(listing);
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
    use crate::providers::Provider;
    use crate::providers::echo::EchoProvider;
    use crate::providers::entry::Discovery;

    fn entry(name: &str, models: &[&str], prefixes: &[&str], discover: bool) -> ProviderEntry {
        ProviderEntry::new(
            name,
            Provider::Echo(EchoProvider::default()),
            Some(4),
            models.iter().map(|m| m.to_string()).collect(),
            prefixes.iter().map(|p| p.to_string()).collect(),
            discover,
        )
    }

    fn refused(status: StatusCode, last_listed: &[&str]) -> Discovery {
        Discovery::Refused {
            status,
            last_listed: last_listed.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn exact_names_beat_prefixes_and_longer_prefixes_win() {
        let router = ModelRouter::new(vec![
            entry("a", &[], &["gpt-"], false),
            entry("b", &["gpt-4o"], &["gpt-4o-mini"], false),
            entry("c", &[], &["gpt-"], false),
        ]);
        let name = |m: &str| router.resolve(m).map(|e| e.name.clone());
        assert_eq!(name("gpt-4o").as_deref(), Some("b"));
        assert_eq!(name("gpt-4o-mini-2024").as_deref(), Some("b"));
        assert_eq!(name("gpt-3.5").as_deref(), Some("a"), "the first of equals");
        assert_eq!(name("llama3"), None);
    }

    #[test]
    fn a_provider_that_cannot_list_serves_anything_until_it_can() {
        let router = ModelRouter::new(vec![entry("local", &[], &[], true)]);
        assert!(router.resolve("whatever").is_none(), "not asked yet");
        router.providers[0].set_discovery(Discovery::Unavailable);
        assert!(router.resolve("whatever").is_some());
        assert_eq!(router.models()[0].name, "*");
        router.providers[0].set_discovery(Discovery::Listed(vec!["llama3".into()]));
        assert!(router.resolve("whatever").is_none());
        assert!(router.resolve("llama3").is_some());
    }

    #[test]
    fn a_refusal_is_the_answer_for_what_the_provider_would_serve() {
        let router = ModelRouter::new(vec![
            entry("openai", &[], &[], true),
            entry("gateway", &[], &["gw-"], true),
            entry("echo", &["echo"], &[], false),
        ]);
        router.providers[0].set_discovery(refused(StatusCode::UNAUTHORIZED, &["gpt-4o"]));
        router.providers[1].set_discovery(refused(StatusCode::FORBIDDEN, &[]));

        let refusal = router.route("anything").expect_err("refused");
        assert_eq!(
            refusal,
            Unroutable::ProviderRefused {
                provider: "openai".into(),
                status: StatusCode::UNAUTHORIZED
            }
        );
        assert_eq!(
            refusal.message(),
            r#"provider "openai" refused to list its models (HTTP 401 Unauthorized): check its API key"#
        );
        assert!(matches!(
            ProviderError::from(refusal),
            ProviderError::Retryable { .. }
        ));
        // What the configuration names itself is still served.
        assert_eq!(router.route("gw-1").expect("prefix").name, "gateway");
        assert_eq!(router.route("echo").expect("exact").name, "echo");
        let names: Vec<_> = router.models().into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["gw-*", "echo"]);

        let router = ModelRouter::new(vec![entry("echo", &["echo"], &[], false)]);
        let unknown = router.route("llama3").expect_err("unknown");
        assert!(matches!(&unknown, Unroutable::NoProvider { model, .. } if model == "llama3"));
        assert_eq!(
            unknown.message(),
            r#"no provider serves model "llama3"; known models: echo"#
        );
        assert!(matches!(
            ProviderError::from(unknown),
            ProviderError::Permanent { .. }
        ));
    }

    #[test]
    fn a_model_a_refused_provider_listed_is_refused_by_name() {
        let router = ModelRouter::new(vec![
            entry("first", &[], &[], true),
            entry("second", &[], &[], true),
        ]);
        router.providers[0].set_discovery(refused(StatusCode::FORBIDDEN, &["a"]));
        router.providers[1].set_discovery(Discovery::Listed(vec!["a".into(), "b".into()]));
        assert!(matches!(
            router.route("a"),
            Err(Unroutable::ProviderRefused { provider, .. }) if provider == "first"
        ));
        assert_eq!(router.route("b").expect("listed").name, "second");
    }
}
