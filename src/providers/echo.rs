//! The built-in `echo` provider: answers with the prompt itself. It needs no
//! network and no key; it is for demos, first runs and tests, not for work.

use crate::providers::{Completion, CompletionRequest, ProviderError};

/// The model name `echo` serves.
pub const ECHO_MODEL: &str = "echo";

/// Answers every prompt with the prompt.
#[derive(Debug, Clone, Default)]
pub struct EchoProvider;

impl EchoProvider {
    /// Returns the prompt as the answer; tokens are counted as words.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let words = |text: &str| i32::try_from(text.split_whitespace().count()).unwrap_or(i32::MAX);
        let system_words = request.system.as_deref().map_or(0, words);
        Ok(Completion {
            text: request.prompt.clone(),
            prompt_tokens: Some(words(&request.prompt).saturating_add(system_words)),
            completion_tokens: Some(words(&request.prompt)),
        })
    }
}
