//! Filling a gap: pieces heard past the end of what is kept wait while the
//! attempt's saved text (`task_partial_results`, saved about once a second
//! by its worker) is read, again and again until it reaches them; then
//! they follow it, and subscribers get the whole text from the start (each
//! skips what it has).

use std::sync::Arc;

use crate::output::hub::{Inner, Kept, Piece, RESYNC_EVERY, State, lock};
use crate::output::store;
use crate::output::wire::OutputChunk;
use crate::queue::AttemptId;

impl Inner {
    /// Fills an attempt's gap from its saved text, reading it again until it
    /// covers the gap, then lays the waiting pieces after it. Gives up when
    /// the attempt is no longer kept (forgotten, or replaced by a newer one).
    pub(super) async fn fill_gap(self: Arc<Self>, attempt: AttemptId) {
        loop {
            let saved = match self.pool.get().await {
                Ok(mut conn) => store::saved_text(&mut conn, attempt).await.ok().flatten(),
                Err(_) => None,
            };
            {
                let mut state = lock(&self.state);
                let State {
                    kept,
                    subscribers,
                    bytes,
                } = &mut *state;
                let Some(entry) = kept.get_mut(&attempt.task_id) else {
                    return;
                };
                if entry.attempt != attempt.attempt || !entry.has_gap() {
                    return;
                }
                if let Some(saved) = saved {
                    let before = entry.size();
                    if fill(entry, saved) {
                        *bytes = *bytes + entry.size() - before;
                        if let Some(sender) = subscribers.get(&attempt.task_id) {
                            let _ = sender.send(Piece::Text {
                                attempt: entry.attempt,
                                offset: 0,
                                text: entry.text.clone(),
                            });
                            if entry.ended {
                                let _ = sender.send(Piece::End {
                                    attempt: entry.attempt,
                                });
                            }
                        }
                        return;
                    }
                    *bytes = *bytes + entry.size() - before;
                }
            }
            tokio::time::sleep(RESYNC_EVERY).await;
        }
    }

    /// After the listener reconnected, pieces may have been missed: every
    /// unfinished attempt is read back from its saved text.
    pub(super) fn reread_all(self: &Arc<Self>) {
        let attempts: Vec<AttemptId> = {
            let mut state = lock(&self.state);
            let mut attempts = Vec::new();
            for (task_id, kept) in state.kept.iter_mut() {
                if kept.ended || kept.has_gap() {
                    continue;
                }
                // An empty marker piece past the end opens a gap: what
                // follows waits until the saved text is read.
                kept.waiting.push(OutputChunk {
                    task: *task_id,
                    attempt: kept.attempt,
                    offset: kept.text.len() as u64 + 1,
                    text: String::new(),
                    done: false,
                });
                attempts.push(AttemptId {
                    task_id: *task_id,
                    attempt: kept.attempt,
                });
            }
            attempts
        };
        for attempt in attempts {
            tokio::spawn(Arc::clone(self).fill_gap(attempt));
        }
    }
}

/// Lays `saved` (the attempt's saved text) under the kept text and the
/// waiting pieces; true once no gap is left.
fn fill(kept: &mut Kept, saved: String) -> bool {
    if saved.len() > kept.text.len() && saved.starts_with(kept.text.as_str()) {
        kept.text = saved;
    }
    kept.waiting.sort_by_key(|chunk| chunk.offset);
    let mut waiting = std::mem::take(&mut kept.waiting).into_iter().peekable();
    while let Some(chunk) = waiting.peek() {
        let offset = usize::try_from(chunk.offset).unwrap_or(usize::MAX);
        let known = kept.text.len();
        // A reconnect's marker is one past the end: it only asks for the saved text.
        let is_marker = chunk.text.is_empty() && !chunk.done && offset == known + 1;
        if offset > known && !is_marker {
            break;
        }
        if let Some(new) = chunk.text.get(known.saturating_sub(offset)..)
            && offset <= known
        {
            kept.text.push_str(new);
        }
        waiting.next();
    }
    kept.waiting = waiting.collect();
    kept.waiting.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(offset: u64, text: &str, done: bool) -> OutputChunk {
        OutputChunk {
            task: 1,
            attempt: 1,
            offset,
            text: text.to_owned(),
            done,
        }
    }

    #[test]
    fn saved_text_fills_a_gap_and_the_waiting_pieces_follow_it() {
        let mut kept = Kept::new(1);
        kept.text = "one ".to_owned();
        kept.waiting = vec![piece(14, "four", true), piece(8, "three ", false)];
        // Saved text that stops short of the gap fills nothing yet.
        assert!(!fill(&mut kept, "one tw".to_owned()));
        assert_eq!(kept.text, "one tw");
        assert_eq!(kept.waiting.len(), 2);
        // Saved text past the first waiting piece's start: the overlap is
        // taken once, and both pieces follow in order.
        assert!(fill(&mut kept, "one two thr".to_owned()));
        assert_eq!(kept.text, "one two three four");
        assert!(kept.waiting.is_empty());
    }

    #[test]
    fn a_reconnect_marker_needs_only_the_saved_text_and_stale_text_is_ignored() {
        let mut kept = Kept::new(1);
        kept.text = "one two ".to_owned();
        kept.waiting = vec![piece(9, "", false)];
        // Saved text older than what is kept changes nothing, and ends the gap.
        assert!(fill(&mut kept, "one ".to_owned()));
        assert_eq!(kept.text, "one two ");
        kept.waiting = vec![piece(9, "", false)];
        assert!(fill(&mut kept, "one two three ".to_owned()));
        assert_eq!(kept.text, "one two three ");
    }
}
