//! Provider configuration: a `taskrunner.toml` file, or, for the common case,
//! `OPENAI_BASE_URL` and `OPENAI_API_KEY` alone. The built-in `echo` model is
//! always served.
//!
//! How long a call to a provider may take is one number, the attempt's
//! timeout: the task's `timeoutSeconds` if it set one, else the provider's
//! `timeout_seconds` if configured, else `--task-timeout-seconds` (300 s by
//! default). The HTTP client adds no limit of its own but 10 s to connect, so
//! a task that allows itself an hour gets an hour.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::providers::Provider;
use crate::providers::echo::{ECHO_MODEL, EchoProvider};
use crate::providers::openai::{OpenAiConfig, OpenAiProvider};
use crate::providers::routing::{ModelRouter, ProviderEntry};

/// OpenAI's API, the default base URL of an OpenAI-compatible provider.
pub const OPENAI_DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The variable naming an OpenAI-compatible provider's base URL when no
/// configuration file is used.
pub const OPENAI_BASE_URL_VAR: &str = "OPENAI_BASE_URL";

/// The variable holding that provider's API key.
pub const OPENAI_API_KEY_VAR: &str = "OPENAI_API_KEY";

/// The variables the providers are read from beside the command line's own,
/// so that deployment files can be checked against them.
pub const PROVIDER_ENV_VARS: [&str; 2] = [OPENAI_BASE_URL_VAR, OPENAI_API_KEY_VAR];

/// The file read when no other is named and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "taskrunner.toml";

/// The shape of `taskrunner.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersFile {
    /// The providers, in order of preference.
    #[serde(default, rename = "provider")]
    pub providers: Vec<ProviderSettings>,
}

/// One `[[provider]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// Shown in `models` and in errors.
    pub name: String,
    /// `openai` (any OpenAI-compatible server) or `echo`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The API's base URL, e.g. `http://localhost:11434/v1` for Ollama.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The environment variable holding the API key (the key itself never
    /// goes in the file). Unset or empty sends no key, as local servers want.
    pub api_key_env: Option<String>,
    /// How long one attempt at a task on this provider may take, in seconds,
    /// when the task sets no `timeoutSeconds` (a task's own value always
    /// wins). Unset, `--task-timeout-seconds` applies. Not an HTTP timeout:
    /// nothing else cuts a call short.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// Most calls in flight to this provider from one process; unset, only
    /// `--workers` limits them.
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// Model names served, exactly.
    #[serde(default)]
    pub models: Vec<String>,
    /// Model name prefixes served.
    #[serde(default)]
    pub model_prefixes: Vec<String>,
    /// Ask the provider for its models (`GET /models`) at start and now and
    /// then. If it answers 401 or 403, tasks for the models it would serve
    /// (any name, when it names none here) are refused with
    /// PROVIDER_UNAVAILABLE until it lists them; `models` and
    /// `model_prefixes` named here are still served, so a key that may run
    /// models but not list them works with those (or with this set to false).
    #[serde(default = "default_true")]
    pub discover_models: bool,
    /// `echo` only: milliseconds to wait before each word of its answer
    /// after the first, so that it writes like a model (unset or 0: at once).
    #[serde(default)]
    pub word_delay_ms: Option<u64>,
}

fn default_kind() -> String {
    "openai".to_owned()
}
fn default_base_url() -> String {
    OPENAI_DEFAULT_BASE_URL.to_owned()
}
fn default_true() -> bool {
    true
}

/// Builds the model router from `file` if given (or `taskrunner.toml` if it
/// exists), else from `OPENAI_BASE_URL` / `OPENAI_API_KEY`.
pub fn load_router(file: Option<&Path>) -> anyhow::Result<ModelRouter> {
    let default_file = Path::new(DEFAULT_CONFIG_FILE);
    let file = file.or_else(|| default_file.exists().then_some(default_file));
    let settings = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read {}", path.display()))?;
            let parsed: ProvidersFile = toml::from_str(&text).with_context(|| {
                format!("{} is not a valid provider configuration", path.display())
            })?;
            tracing::info!(file = %path.display(), providers = parsed.providers.len(), "read provider configuration");
            parsed.providers
        }
        None => from_env(),
    };
    router_from(settings)
}

/// The one OpenAI-compatible provider that `OPENAI_BASE_URL` and
/// `OPENAI_API_KEY` describe, if either is set.
fn from_env() -> Vec<ProviderSettings> {
    let base_url = std::env::var(OPENAI_BASE_URL_VAR)
        .ok()
        .filter(|v| !v.is_empty());
    let has_key = std::env::var(OPENAI_API_KEY_VAR).is_ok();
    if base_url.is_none() && !has_key {
        return Vec::new();
    }
    vec![ProviderSettings {
        name: "openai".to_owned(),
        kind: default_kind(),
        base_url: base_url.unwrap_or_else(default_base_url),
        api_key_env: Some(OPENAI_API_KEY_VAR.to_owned()),
        timeout_seconds: None,
        max_concurrency: None,
        models: Vec::new(),
        model_prefixes: Vec::new(),
        discover_models: true,
        word_delay_ms: None,
    }]
}

/// The router for these settings, with `echo` added unless configured.
pub fn router_from(settings: Vec<ProviderSettings>) -> anyhow::Result<ModelRouter> {
    let mut entries = Vec::with_capacity(settings.len() + 1);
    for setting in settings {
        entries.push(entry_from(setting)?);
    }
    let echo_configured = entries
        .iter()
        .any(|entry| matches!(entry.provider, Provider::Echo(_)));
    if !echo_configured {
        entries.push(ProviderEntry::new(
            "echo",
            Provider::Echo(EchoProvider::default()),
            None,
            vec![ECHO_MODEL.to_owned()],
            Vec::new(),
            false,
        ));
    }
    Ok(ModelRouter::new(entries))
}

/// The most a provider's `timeout_seconds` may be: a task's own limit.
const MAX_TIMEOUT_SECONDS: u64 = 86_400;

fn entry_from(setting: ProviderSettings) -> anyhow::Result<ProviderEntry> {
    if let Some(seconds) = setting.timeout_seconds {
        anyhow::ensure!(
            (1..=MAX_TIMEOUT_SECONDS).contains(&seconds),
            "provider {:?} has timeout_seconds = {seconds}; it must be between 1 and {MAX_TIMEOUT_SECONDS}",
            setting.name
        );
    }
    /// The longest `word_delay_ms`: a minute between words is no model.
    const MAX_WORD_DELAY_MS: u64 = 60_000;
    if let Some(delay) = setting.word_delay_ms {
        anyhow::ensure!(
            setting.kind == "echo",
            "provider {:?} sets word_delay_ms, which only an echo provider takes",
            setting.name
        );
        anyhow::ensure!(
            delay <= MAX_WORD_DELAY_MS,
            "provider {:?} has word_delay_ms = {delay}; it must be at most {MAX_WORD_DELAY_MS}",
            setting.name
        );
    }
    let provider = match setting.kind.as_str() {
        "echo" => Provider::Echo(EchoProvider::with_word_delay(Duration::from_millis(
            setting.word_delay_ms.unwrap_or(0),
        ))),
        "openai" => {
            let api_key = match &setting.api_key_env {
                Some(variable) => std::env::var(variable).ok().filter(|key| !key.is_empty()),
                None => None,
            };
            Provider::OpenAi(OpenAiProvider::new(OpenAiConfig {
                name: setting.name.clone(),
                base_url: setting.base_url.clone(),
                api_key,
            })?)
        }
        other => bail!(
            "provider {:?} has kind {other:?}; use \"openai\" (any OpenAI-compatible API) or \"echo\"",
            setting.name
        ),
    };
    let models = if matches!(provider, Provider::Echo(_)) && setting.models.is_empty() {
        vec![ECHO_MODEL.to_owned()]
    } else {
        setting.models
    };
    let discover = setting.discover_models && matches!(provider, Provider::OpenAi(_));
    Ok(ProviderEntry::new(
        setting.name,
        provider,
        setting.max_concurrency,
        models,
        setting.model_prefixes,
        discover,
    )
    .with_attempt_timeout(setting.timeout_seconds.map(Duration::from_secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_two_providers_routes_by_name_and_prefix() {
        let file: ProvidersFile = toml::from_str(
            r#"
            [[provider]]
            name = "ollama"
            base_url = "http://127.0.0.1:11434/v1"
            models = ["llama3.1:8b"]
            discover_models = false

            [[provider]]
            name = "openai"
            api_key_env = "TASKRUNNER_TEST_NO_SUCH_KEY"
            model_prefixes = ["gpt-", "o1"]
            max_concurrency = 8
            "#,
        )
        .unwrap();
        let router = router_from(file.providers).unwrap();
        let provider = |m: &str| router.resolve(m).map(|e| e.name.clone());
        assert_eq!(provider("llama3.1:8b").as_deref(), Some("ollama"));
        assert_eq!(provider("gpt-4o").as_deref(), Some("openai"));
        assert_eq!(provider("echo").as_deref(), Some("echo"));
        assert_eq!(provider("mistral"), None);
    }

    #[test]
    fn unknown_kinds_and_keys_are_refused() {
        assert!(
            toml::from_str::<ProvidersFile>("[[provider]]\nname = \"x\"\nbase = \"y\"").is_err()
        );
        let file: ProvidersFile =
            toml::from_str("[[provider]]\nname = \"x\"\nkind = \"grpc\"").unwrap();
        assert!(router_from(file.providers).is_err());
    }

    #[test]
    fn timeout_seconds_is_the_default_attempt_timeout_and_optional() {
        let file: ProvidersFile = toml::from_str(
            r#"
            [[provider]]
            name = "slow"
            base_url = "http://127.0.0.1:11434/v1"
            models = ["big"]
            timeout_seconds = 3600

            [[provider]]
            name = "plain"
            base_url = "http://127.0.0.1:11435/v1"
            models = ["small"]
            "#,
        )
        .unwrap();
        let router = router_from(file.providers).unwrap();
        let default = Duration::from_secs(300);
        let timeout = |model: &str, task: Option<i32>| {
            router.route(model).unwrap().attempt_timeout(task, default)
        };
        assert_eq!(timeout("big", None), Duration::from_secs(3600));
        assert_eq!(timeout("big", Some(20)), Duration::from_secs(20));
        assert_eq!(timeout("small", None), default);

        for seconds in [0, 86_401] {
            let file: ProvidersFile = toml::from_str(&format!(
                "[[provider]]\nname = \"x\"\ntimeout_seconds = {seconds}"
            ))
            .unwrap();
            let error = router_from(file.providers).expect_err("out of range");
            assert!(error.to_string().contains("timeout_seconds"), "{error:#}");
        }
    }

    #[test]
    fn only_an_echo_takes_a_word_delay_and_a_bounded_one() {
        let parse = |toml: &str| {
            let file: ProvidersFile = toml::from_str(toml).unwrap();
            router_from(file.providers)
        };
        assert!(parse("[[provider]]\nname = \"e\"\nkind = \"echo\"\nword_delay_ms = 20").is_ok());
        let error = parse("[[provider]]\nname = \"o\"\nword_delay_ms = 20").expect_err("openai");
        assert!(error.to_string().contains("word_delay_ms"), "{error:#}");
        let error = parse("[[provider]]\nname = \"e\"\nkind = \"echo\"\nword_delay_ms = 60001")
            .expect_err("too slow");
        assert!(error.to_string().contains("at most 60000"), "{error:#}");
    }

    #[test]
    fn with_nothing_configured_echo_is_served() {
        let router = router_from(Vec::new()).unwrap();
        let models = router.models();
        assert_eq!(models.len(), 1);
        assert_eq!(
            (models[0].name.as_str(), models[0].provider.as_str()),
            ("echo", "echo")
        );
    }
}
