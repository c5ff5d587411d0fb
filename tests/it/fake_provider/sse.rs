//! The fake provider's streamed answers: server-sent events shaped like
//! OpenAI's (a role chunk, a chunk per word, a finish chunk, a usage chunk,
//! `[DONE]`), with the pace and the ending a prompt asks for.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::json;

use super::{AbortGuard, USAGE};

/// How a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Finish reason, usage, `[DONE]`.
    Finished,
    /// The body ends cleanly, with none of those.
    Cut,
    /// The connection breaks.
    Break,
    /// An error event, then the body ends.
    Error,
}

/// A streamed answer to send.
pub struct Stream {
    words: Vec<String>,
    /// The wait before each word after the first.
    delay: Duration,
    ending: Ending,
}

impl Stream {
    /// The whole of `text`, a word per chunk, at once.
    pub fn whole(text: &str) -> Stream {
        Stream {
            words: words(text),
            delay: Duration::ZERO,
            ending: Ending::Finished,
        }
    }

    /// The stream a `stream-…` or `cut-once` prompt asks for (split at `:`),
    /// if it is one; `call_number` counts the calls with this prompt.
    pub fn for_prompt(parts: &[&str], call_number: usize) -> Option<Stream> {
        let number = |text: &str| text.parse::<usize>().unwrap_or(0);
        let cut = |n: &str, rest: &[&str], ending| {
            let mut stream = Stream::whole(&rest.join(":"));
            stream.words.truncate(number(n));
            stream.ending = ending;
            stream
        };
        let stream = match parts {
            ["stream-slow", ms, rest @ ..] => Stream {
                delay: Duration::from_millis(number(ms) as u64),
                ..Stream::whole(&rest.join(":"))
            },
            ["stream-cut", n, rest @ ..] => cut(n, rest, Ending::Cut),
            ["stream-break", n, rest @ ..] => cut(n, rest, Ending::Break),
            ["stream-error", n, rest @ ..] => cut(n, rest, Ending::Error),
            ["cut-once", ms, rest @ ..] => {
                let mut stream = Stream {
                    delay: Duration::from_millis(number(ms) as u64),
                    ..Stream::whole(&rest.join(":"))
                };
                if call_number == 1 {
                    stream.words.truncate(stream.words.len().div_ceil(2));
                    stream.ending = Ending::Break;
                }
                stream
            }
            _ => return None,
        };
        Some(stream)
    }

    /// One event that never ends: a `data:` line that goes on in 64 KiB
    /// pieces, with no newline.
    pub fn endless_event() -> Response {
        let start = Bytes::from_static(b"data: {\"choices\": [{\"delta\": {\"content\": \"");
        let piece = Bytes::from(vec![b'x'; 64 * 1024]);
        let rest = futures_util::stream::repeat_with(move || Ok(piece.clone()));
        let body = futures_util::stream::once(async { Ok::<_, std::io::Error>(start) }).chain(rest);
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(body),
        )
            .into_response()
    }

    /// The response, with nothing to count when it ends.
    pub fn body(self) -> Response {
        self.respond(None)
    }

    /// The response; `guard` counts the call out of flight when the stream
    /// ends, and as aborted if the client leaves before.
    pub fn into_response(self, guard: AbortGuard) -> Response {
        self.respond(Some(guard))
    }

    fn respond(self, guard: Option<AbortGuard>) -> Response {
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let data = json!({
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            });
            Ok(format!("data: {data}\n\n"))
        };
        let mut events: Vec<(Duration, Result<String, std::io::Error>)> = vec![(
            Duration::ZERO,
            chunk(json!({"role": "assistant", "content": ""}), None),
        )];
        for (i, word) in self.words.iter().enumerate() {
            let wait = if i == 0 { Duration::ZERO } else { self.delay };
            events.push((wait, chunk(json!({ "content": word }), None)));
        }
        match self.ending {
            Ending::Finished => {
                let usage = json!({
                    "choices": [],
                    "usage": { "prompt_tokens": USAGE.0, "completion_tokens": USAGE.1, "total_tokens": USAGE.0 + USAGE.1 },
                });
                events.push((Duration::ZERO, chunk(json!({}), Some("stop"))));
                events.push((Duration::ZERO, Ok(format!("data: {usage}\n\n"))));
                events.push((Duration::ZERO, Ok("data: [DONE]\n\n".to_owned())));
            }
            Ending::Cut => {}
            Ending::Break => events.push((
                Duration::ZERO,
                Err(std::io::Error::other("the fake provider breaks the stream")),
            )),
            Ending::Error => {
                let error = json!({ "error": { "message": "fake provider failed mid-answer", "type": "server_error" } });
                events.push((Duration::ZERO, Ok(format!("data: {error}\n\n"))));
            }
        }
        let body = futures_util::stream::unfold(
            (events.into_iter(), guard),
            |(mut events, mut guard)| async move {
                let (wait, event) = events.next()?;
                if events.len() == 0
                    && let Some(guard) = &mut guard
                {
                    guard.answered = true;
                }
                tokio::time::sleep(wait).await;
                Some((event.map(Bytes::from), (events, guard)))
            },
        );
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from_stream(body),
        )
            .into_response()
    }
}

/// `text` as words, each with the spaces after it.
fn words(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}
