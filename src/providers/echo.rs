//! The built-in `echo` provider: answers with the prompt itself. It needs no
//! network and no key; it is for demos, first runs and tests, not for work.
//!
//! It streams its answer a word at a time (each word with the whitespace
//! after it), so streamed answers can be tried without a provider. By
//! default it does not wait between words, which keeps it as fast as tests
//! and benchmarks need; `word_delay_ms` in its configuration makes it write
//! like a model does.

use std::time::Duration;

use crate::providers::{Completion, CompletionRequest, ProviderError};

/// The model name `echo` serves.
pub const ECHO_MODEL: &str = "echo";

/// Answers every prompt with the prompt.
#[derive(Debug, Clone, Default)]
pub struct EchoProvider {
    /// How long to wait before each word after the first.
    word_delay: Duration,
}

impl EchoProvider {
    /// An echo that waits `word_delay` before each word after the first.
    pub fn with_word_delay(word_delay: Duration) -> Self {
        EchoProvider { word_delay }
    }

    /// Returns the prompt as the answer; tokens are counted as words.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        self.stream(request, &mut |_| {}).await
    }

    /// Returns the prompt as the answer, passing it to `on_text` a word at a time.
    pub async fn stream(
        &self,
        request: &CompletionRequest,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ProviderError> {
        for (i, word) in words_with_spaces(&request.prompt).enumerate() {
            if i > 0 && !self.word_delay.is_zero() {
                tokio::time::sleep(self.word_delay).await;
            }
            on_text(word);
        }
        let words = |text: &str| i32::try_from(text.split_whitespace().count()).unwrap_or(i32::MAX);
        let system_words = request.system.as_deref().map_or(0, words);
        Ok(Completion {
            text: request.prompt.clone(),
            prompt_tokens: Some(words(&request.prompt).saturating_add(system_words)),
            completion_tokens: Some(words(&request.prompt)),
        })
    }
}

/// `text` cut after each run of whitespace that follows a word: every piece
/// is a word and the whitespace after it (the first also has any whitespace
/// before it), and the pieces joined are `text`.
fn words_with_spaces(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let leading = rest.len() - rest.trim_start().len();
        let word_end = rest[leading..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| leading + i);
        let spaces = rest[word_end..].len() - rest[word_end..].trim_start().len();
        let (piece, after) = rest.split_at(word_end + spaces);
        rest = after;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_their_following_whitespace_and_join_to_the_text() {
        let pieces = |text| words_with_spaces(text).collect::<Vec<_>>();
        assert_eq!(pieces("one two  three"), ["one ", "two  ", "three"]);
        assert_eq!(pieces("  lead\ttab\n"), ["  lead\t", "tab\n"]);
        assert_eq!(pieces("é 🙂 x"), ["é ", "🙂 ", "x"]);
        assert_eq!(pieces("   "), ["   "]);
        assert!(pieces("").is_empty());
    }

    #[tokio::test]
    async fn the_answer_is_the_prompt_in_words() {
        let request = CompletionRequest {
            model: ECHO_MODEL.to_owned(),
            prompt: "say it twice".to_owned(),
            system: Some("be brief".to_owned()),
            temperature: None,
            max_tokens: None,
        };
        let mut pieces = Vec::new();
        let answer = EchoProvider::default()
            .stream(&request, &mut |text| pieces.push(text.to_owned()))
            .await
            .expect("echo never fails");
        assert_eq!(pieces, ["say ", "it ", "twice"]);
        assert_eq!(answer.text, "say it twice");
        assert_eq!(
            (answer.prompt_tokens, answer.completion_tokens),
            (Some(5), Some(3))
        );
    }
}
