//! The worker's book of what its running attempts have written: each
//! attempt's text so far, how much of it was sent to the API processes, how
//! much was saved for `partialResult`, and whether it is over.
//!
//! A provider writes into it between reads of its response, so writing never
//! waits: it appends to the text under a short lock and rings the writer
//! (see [`writer`](super::writer)). The writer sends what is unsent when it
//! can, so if sending falls behind, the next send carries more text, and the
//! attempt itself never waits for it. What is held is bounded by the answer
//! cap of each running attempt.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::output::wire;
use crate::queue::AttemptId;

/// Unsent text that is sent without waiting for the rest of the 50 ms.
pub const SEND_AT_BYTES: usize = 4 * 1024;

/// What one attempt wrote, and where its sending and saving stand.
#[derive(Debug, Default)]
struct AttemptText {
    text: String,
    /// Bytes of `text` sent to the API processes.
    sent: usize,
    /// Bytes of `text` in the saved row (0: no row).
    saved: usize,
    /// The attempt is over: its text is complete.
    ended: bool,
    /// The last piece, saying so, was sent.
    end_sent: bool,
    /// Its outcome is stored (or it was abandoned): its saved row can go.
    settled: bool,
}

/// Payloads to send, and how far each attempt's text they carry.
#[derive(Debug, Default)]
pub struct Unsent {
    pub payloads: Vec<String>,
    marks: Vec<(AttemptId, usize, bool)>,
}

/// Rows to save and rows to remove, and how far each saved text goes.
#[derive(Debug, Default)]
pub struct Unsaved {
    /// (task, attempt, text so far) of attempts still running.
    pub rows: Vec<(AttemptId, String)>,
    /// Rows of attempts that are settled: their outcome is stored.
    pub gone: Vec<AttemptId>,
}

/// The book; one per worker, shared by its attempts and its output writer.
#[derive(Debug, Default)]
pub struct OutputBook {
    attempts: Mutex<HashMap<AttemptId, AttemptText>>,
    /// Rung when there is text to send: the writer sends within 50 ms.
    pub(super) pending: Notify,
    /// Rung when there is text that should not wait: an attempt's first
    /// text (the wait a reader feels most), 4 KiB unsent, an attempt's end.
    pub(super) urgent: Notify,
}

impl OutputBook {
    fn attempts(&self) -> MutexGuard<'_, HashMap<AttemptId, AttemptText>> {
        // Every change under the lock is a whole assignment or append.
        self.attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens an attempt's page: call before its provider is.
    pub fn begin(&self, attempt: AttemptId) {
        self.attempts().insert(attempt, AttemptText::default());
    }

    /// Appends the next piece of an attempt's answer.
    pub fn write(&self, attempt: AttemptId, text: &str) {
        if text.is_empty() {
            return;
        }
        let urgent = {
            let mut attempts = self.attempts();
            let Some(page) = attempts.get_mut(&attempt) else {
                return;
            };
            if page.ended {
                return;
            }
            let first = page.text.is_empty();
            page.text.push_str(text);
            first || page.text.len() - page.sent >= SEND_AT_BYTES
        };
        self.pending.notify_one();
        if urgent {
            self.urgent.notify_one();
        }
    }

    /// Marks an attempt's text complete, however it ended.
    pub fn end(&self, attempt: AttemptId) {
        if let Some(page) = self.attempts().get_mut(&attempt) {
            page.ended = true;
        }
        self.pending.notify_one();
        self.urgent.notify_one();
    }

    /// Marks attempts whose outcome is stored (or that were abandoned): their
    /// saved rows are removed at the next save.
    pub fn settle(&self, settled: impl IntoIterator<Item = AttemptId>) {
        let mut attempts = self.attempts();
        for attempt in settled {
            if let Some(page) = attempts.get_mut(&attempt) {
                page.settled = true;
                page.ended = true;
            }
        }
        attempts.retain(|_, page| !page.is_spent());
    }

    /// The text so far of a running attempt (for tests and diagnostics).
    pub fn text(&self, attempt: AttemptId) -> Option<String> {
        self.attempts().get(&attempt).map(|page| page.text.clone())
    }

    /// Payloads for every attempt's unsent text and unsent end, up to about
    /// `budget` bytes; the rest waits for the next send.
    pub fn unsent(&self, budget: usize) -> Unsent {
        let attempts = self.attempts();
        let mut unsent = Unsent::default();
        let mut size = 0;
        for (attempt, page) in attempts.iter() {
            if size >= budget {
                // Urgent enough: more is waiting.
                self.urgent.notify_one();
                break;
            }
            let ending = page.ended && !page.end_sent;
            if page.sent == page.text.len() && !ending {
                continue;
            }
            // An answer complete before any of it was sent goes nowhere: the
            // task's final state carries it to subscribers (as the stored
            // result), so an instant answer costs the API processes nothing.
            if page.sent == 0 && page.ended {
                unsent.marks.push((*attempt, page.text.len(), true));
                continue;
            }
            let before = unsent.payloads.len();
            let text = &page.text[page.sent..];
            wire::encode(
                *attempt,
                page.sent as u64,
                text,
                page.ended,
                &mut unsent.payloads,
            );
            size += unsent.payloads[before..]
                .iter()
                .map(String::len)
                .sum::<usize>();
            unsent.marks.push((*attempt, page.text.len(), page.ended));
        }
        unsent
    }

    /// Records that `unsent` was sent.
    pub fn sent(&self, unsent: &Unsent) {
        let mut attempts = self.attempts();
        for &(attempt, upto, ended) in &unsent.marks {
            if let Some(page) = attempts.get_mut(&attempt) {
                page.sent = page.sent.max(upto);
                page.end_sent |= ended;
            }
        }
        attempts.retain(|_, page| !page.is_spent());
    }

    /// The rows to save (running attempts whose text grew since the last
    /// save) and to remove (settled attempts that have one).
    pub fn unsaved(&self) -> Unsaved {
        let attempts = self.attempts();
        let mut unsaved = Unsaved::default();
        for (attempt, page) in attempts.iter() {
            if page.settled {
                if page.saved > 0 {
                    unsaved.gone.push(*attempt);
                }
            } else if !page.ended && page.text.len() > page.saved {
                unsaved.rows.push((*attempt, page.text.clone()));
            }
        }
        // A task with a row to save needs no removal: the save replaces it.
        let saving: Vec<i64> = unsaved.rows.iter().map(|(a, _)| a.task_id).collect();
        unsaved
            .gone
            .retain(|attempt| !saving.contains(&attempt.task_id));
        unsaved
    }

    /// Records that `unsaved` was saved.
    pub fn saved(&self, unsaved: &Unsaved) {
        let mut attempts = self.attempts();
        for (attempt, text) in &unsaved.rows {
            if let Some(page) = attempts.get_mut(attempt) {
                page.saved = page.saved.max(text.len());
            }
        }
        for attempt in &unsaved.gone {
            if let Some(page) = attempts.get_mut(attempt) {
                page.saved = 0;
            }
        }
        attempts.retain(|_, page| !page.is_spent());
    }

    /// Whether anything is left to send or remove.
    pub fn is_idle(&self) -> bool {
        self.attempts().is_empty()
    }
}

impl AttemptText {
    /// Nothing more will be sent or saved for it: it can be forgotten.
    fn is_spent(&self) -> bool {
        self.settled && self.end_sent && self.saved == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::wire::OutputChunk;

    const A: AttemptId = AttemptId {
        task_id: 1,
        attempt: 1,
    };

    fn chunks(unsent: &Unsent) -> Vec<OutputChunk> {
        unsent
            .payloads
            .iter()
            .filter_map(|p| OutputChunk::decode(p))
            .collect()
    }

    #[test]
    fn an_answer_complete_before_its_first_send_sends_nothing() {
        let book = OutputBook::default();
        book.begin(A);
        book.write(A, "all ");
        book.write(A, "at once");
        book.end(A);
        let unsent = book.unsent(1 << 20);
        assert!(unsent.payloads.is_empty());
        book.sent(&unsent);
        assert!(
            book.unsent(1 << 20).payloads.is_empty(),
            "not offered again"
        );
    }

    #[test]
    fn text_is_sent_once_in_order_then_its_end_then_it_is_forgotten() {
        let book = OutputBook::default();
        book.begin(A);
        book.write(A, "one ");
        book.write(A, "two ");
        let first = book.unsent(1 << 20);
        assert_eq!(chunks(&first)[0].text, "one two ");
        book.write(A, "three");
        // Not yet marked sent: the same text is offered again (a failed send is retried).
        assert_eq!(chunks(&book.unsent(1 << 20))[0].text, "one two three");
        book.sent(&first);
        let next = chunks(&book.unsent(1 << 20));
        assert_eq!(
            (next[0].offset, next[0].text.as_str(), next[0].done),
            (8, "three", false)
        );
        book.sent(&book.unsent(1 << 20));
        assert!(book.unsent(1 << 20).payloads.is_empty());

        let saved = book.unsaved();
        assert_eq!(saved.rows, [(A, "one two three".to_owned())]);
        book.saved(&saved);
        assert!(book.unsaved().rows.is_empty(), "saved until it grows");

        book.end(A);
        book.write(A, "late");
        let end = chunks(&book.unsent(1 << 20));
        assert_eq!(
            (end[0].offset, end[0].text.as_str(), end[0].done),
            (13, "", true)
        );
        book.sent(&book.unsent(1 << 20));
        book.settle([A]);
        let gone = book.unsaved();
        assert_eq!((gone.rows.len(), gone.gone.as_slice()), (0, &[A][..]));
        assert!(!book.is_idle());
        book.saved(&gone);
        assert!(book.is_idle(), "sent, ended and its row removed");
    }
}
