//! What a notification on the output channel carries: a piece of one
//! attempt's text, where it starts in that text, and whether it is the last.
//!
//! PostgreSQL refuses a NOTIFY payload of 8,000 bytes or more, so text is
//! split across payloads, each measured as it will be sent (JSON escaping
//! included) and cut only between characters.

use serde::{Deserialize, Serialize};

use crate::queue::AttemptId;

/// The most bytes one payload may have: under PostgreSQL's 8,000, with room
/// to spare for a server whose encoding writes a character longer than UTF-8.
pub const MAX_PAYLOAD_BYTES: usize = 7_800;

/// A piece of an attempt's text, as sent from its worker to every API process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputChunk {
    /// The task.
    pub task: i64,
    /// The attempt's number.
    pub attempt: i32,
    /// Where `text` starts in the attempt's text, in bytes.
    pub offset: u64,
    /// The next piece of the attempt's text (may be empty when `done`).
    pub text: String,
    /// The attempt's text ends with this piece: the attempt is over.
    pub done: bool,
}

impl OutputChunk {
    /// The attempt it belongs to.
    pub fn attempt_id(&self) -> AttemptId {
        AttemptId {
            task_id: self.task,
            attempt: self.attempt,
        }
    }

    /// Where the piece ends in the attempt's text, in bytes.
    pub fn end(&self) -> u64 {
        self.offset + self.text.len() as u64
    }

    /// Reads a payload; `None` if it is not one of ours.
    pub fn decode(payload: &str) -> Option<OutputChunk> {
        serde_json::from_str(payload).ok()
    }
}

/// Appends to `payloads` the payloads that carry `text`, which starts at
/// `offset` in `attempt`'s text; the last one says `done` if asked. Nothing
/// is appended for empty text unless it is `done`.
pub fn encode(attempt: AttemptId, offset: u64, text: &str, done: bool, payloads: &mut Vec<String>) {
    let frame = |offset: u64, text: &str, done: bool| {
        let chunk = OutputChunk {
            task: attempt.task_id,
            attempt: attempt.attempt,
            offset,
            text: text.to_owned(),
            done,
        };
        // Serialising plain fields cannot fail.
        serde_json::to_string(&chunk).unwrap_or_default()
    };
    // Offsets grow, so an empty frame with the last offset (and `false`, the
    // longer flag) is the most any frame costs beyond its text.
    let overhead = frame(offset + text.len() as u64, "", false).len();
    let room = MAX_PAYLOAD_BYTES.saturating_sub(overhead).max(16);
    let mut rest = text;
    let mut at = offset;
    while !rest.is_empty() {
        let mut cut = 0;
        let mut cost = 0;
        for (i, c) in rest.char_indices() {
            let escaped = escaped_len(c);
            if cost + escaped > room {
                break;
            }
            cost += escaped;
            cut = i + c.len_utf8();
        }
        let (piece, after) = rest.split_at(cut);
        payloads.push(frame(at, piece, done && after.is_empty()));
        at += piece.len() as u64;
        rest = after;
    }
    if text.is_empty() && done {
        payloads.push(frame(offset, "", true));
    }
}

/// The bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATTEMPT: AttemptId = AttemptId {
        task_id: 9_007_199_254_740_993,
        attempt: 20,
    };

    fn payloads(offset: u64, text: &str, done: bool) -> Vec<String> {
        let mut payloads = Vec::new();
        encode(ATTEMPT, offset, text, done, &mut payloads);
        payloads
    }

    #[test]
    fn long_text_of_any_characters_splits_into_payloads_under_the_limit() {
        let nasty = "a\"\\\n\u{0}\u{1f}é€🙂\u{7f}".repeat(2_000);
        for text in [nasty.as_str(), &"x".repeat(50_000), &"🙂".repeat(9_000)] {
            let sent = payloads(123, text, true);
            assert!(sent.len() > 1);
            let mut joined = String::new();
            let mut at = 123;
            for (i, payload) in sent.iter().enumerate() {
                assert!(payload.len() <= MAX_PAYLOAD_BYTES, "{}", payload.len());
                let chunk = OutputChunk::decode(payload).expect("decodes");
                assert_eq!((chunk.task, chunk.attempt), (ATTEMPT.task_id, 20));
                assert_eq!(chunk.offset, at, "pieces follow one another");
                assert_eq!(chunk.done, i == sent.len() - 1, "only the last is done");
                at = chunk.end();
                joined.push_str(&chunk.text);
            }
            assert_eq!(joined, text);
        }
    }

    #[test]
    fn short_text_is_one_payload_and_an_end_without_text_is_sent() {
        let sent = payloads(0, "hello", false);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            OutputChunk::decode(&sent[0]),
            Some(OutputChunk {
                task: ATTEMPT.task_id,
                attempt: 20,
                offset: 0,
                text: "hello".into(),
                done: false
            })
        );
        assert!(payloads(5, "", false).is_empty());
        let end = payloads(5, "", true);
        assert_eq!(end.len(), 1);
        let end = OutputChunk::decode(&end[0]).expect("decodes");
        assert!(end.done && end.text.is_empty() && end.offset == 5);
        assert_eq!(OutputChunk::decode("42"), None);
    }
}
