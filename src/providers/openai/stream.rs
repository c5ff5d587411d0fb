//! Reading a streamed chat completion: server-sent events whose data is a
//! JSON chunk (`choices[0].delta.content` carries the next piece of text, the
//! last chunk carries `usage`), ended by `data: [DONE]`.
//!
//! The answer is complete at `[DONE]`, or when the stream ends cleanly after
//! a chunk gave a `finish_reason` (some compatible servers send no `[DONE]`).
//! A stream cut before either is a failure that may pass, as a dropped
//! connection is: text already passed on is not taken back, and the next
//! attempt starts its answer over.

use serde::Deserialize;

use crate::providers::body::caps;
use crate::providers::openai::{OpenAiProvider, Usage, clamp_to_i32, excerpt};
use crate::providers::sse::{SseDecoder, SseError};
use crate::providers::{Completion, FailureKind, ProviderError};

/// The data of the event that ends a stream.
const DONE: &str = "[DONE]";

/// One chunk of a streamed completion: the parts we use.
#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    usage: Option<Usage>,
    /// Some servers report a failure inside the stream, after a 200.
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    /// Which answer it belongs to; we ask for one (index 0).
    #[serde(default)]
    index: u32,
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
}

/// What the stream has said so far.
#[derive(Default)]
struct Answer {
    text: String,
    /// A chunk carried content (an empty string counts): there is an answer.
    has_content: bool,
    /// A chunk gave a finish reason: the answer's text is complete.
    finished: bool,
    usage: Option<Usage>,
}

impl OpenAiProvider {
    /// Reads a streamed answer, passing each piece of its text to `on_text`.
    pub(super) async fn read_stream(
        &self,
        response: &mut reqwest::Response,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Completion, ProviderError> {
        let mut decoder = SseDecoder::new(caps::ANSWER);
        let mut answer = Answer::default();
        let mut events = Vec::new();
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| self.transport_error(&e))?;
            let Some(chunk) = chunk else { break };
            decoder
                .feed(&chunk, &mut events)
                .map_err(|e| self.undecodable(e))?;
            for data in events.drain(..) {
                if data.trim() == DONE {
                    return self.completed(answer);
                }
                self.take_chunk(&data, &mut answer, on_text)?;
            }
        }
        // The stream ended without [DONE]: take an event it did not end with a blank line.
        let last = decoder.finish().map_err(|e| self.undecodable(e))?;
        if let Some(data) = last.filter(|data| data.trim() != DONE) {
            self.take_chunk(&data, &mut answer, on_text)?;
        }
        if !answer.finished {
            return Err(ProviderError::Retryable {
                message: format!(
                    "{}: the answer's stream ended before the answer did (after {} bytes of text)",
                    self.name,
                    answer.text.len()
                ),
                retry_after: None,
                kind: FailureKind::Connection,
            });
        }
        self.completed(answer)
    }

    /// Reads one chunk's JSON into `answer`, passing its text on.
    fn take_chunk(
        &self,
        data: &str,
        answer: &mut Answer,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), ProviderError> {
        let chunk: StreamChunk =
            serde_json::from_str(data).map_err(|e| self.unreadable(e, data))?;
        if let Some(error) = chunk.error {
            let explained = error.get("message").unwrap_or(&error);
            let explained = explained
                .as_str()
                .map_or_else(|| excerpt(&explained.to_string()), excerpt);
            return Err(ProviderError::Retryable {
                message: self.redact(format!(
                    "{}: the provider failed mid-answer: {explained}",
                    self.name
                )),
                retry_after: None,
                kind: FailureKind::ServerError,
            });
        }
        if chunk.usage.is_some() {
            answer.usage = chunk.usage;
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.and_then(|delta| delta.content) {
                answer.has_content = true;
                if answer.text.len() + text.len() > caps::ANSWER {
                    return Err(self.too_large(caps::ANSWER));
                }
                if !text.is_empty() {
                    on_text(&text);
                    answer.text.push_str(&text);
                }
            }
            answer.finished |= choice.finish_reason.is_some();
        }
        Ok(())
    }

    /// The completion a finished stream gave.
    fn completed(&self, answer: Answer) -> Result<Completion, ProviderError> {
        if !answer.has_content {
            return Err(self.no_answer());
        }
        let usage = answer.usage.unwrap_or_default();
        Ok(Completion {
            text: answer.text,
            prompt_tokens: usage.prompt_tokens.map(clamp_to_i32),
            completion_tokens: usage.completion_tokens.map(clamp_to_i32),
        })
    }

    /// The error for a stream that cannot be read as events.
    fn undecodable(&self, error: SseError) -> ProviderError {
        match error {
            SseError::TooLarge => self.too_large(caps::ANSWER),
            SseError::NotText => ProviderError::Retryable {
                message: format!(
                    "{}: invalid response from provider: the stream is not UTF-8 text",
                    self.name
                ),
                retry_after: None,
                kind: FailureKind::InvalidResponse,
            },
        }
    }
}
