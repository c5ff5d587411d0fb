//! The API side of streamed answers: hears the output channel through the
//! process's listener and keeps, for each task whose attempt it hears of,
//! that attempt's text so far, so that a subscriber who comes late gets it
//! whole, then every piece after it.
//!
//! - **In order, nothing twice.** Pieces carry their byte offset: one that
//!   overlaps what is kept adds only what is new. One that starts past the
//!   end (this process started mid-answer, kept text was evicted, or the
//!   listener reconnected) leaves a gap: the attempt's saved text
//!   (`task_partial_results`, saved each second) is read until it covers the
//!   gap, and the pieces heard meanwhile are laid after it.
//! - **Bounded.** An attempt is forgotten shortly after its last piece, when
//!   a newer attempt of its task is heard, after ten minutes without a word
//!   (its worker was lost), or, least recently heard first, when more than
//!   [`MAX_KEPT_BYTES`] or [`MAX_KEPT_ATTEMPTS`] are kept. A forgotten
//!   attempt that speaks again is read back from its saved text.
//! - **No one waits for anyone.** The listener's handler only appends under
//!   a short lock; subscribers hear of new text through a bounded broadcast
//!   per task, and one that falls behind skips to the kept text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::db::DbPool;
use crate::events::{Heard, Listener};
use crate::output::OUTPUT_CHANNEL;
use crate::output::wire::OutputChunk;
use crate::queue::AttemptId;

mod gaps;

/// The most text kept for all attempts together.
pub const MAX_KEPT_BYTES: usize = 64 * 1024 * 1024;
/// The most attempts kept at once.
pub const MAX_KEPT_ATTEMPTS: usize = 10_000;
/// How long an attempt is kept after its last piece (for subscribers still
/// catching up, and those who come before its outcome is stored).
const LINGER: Duration = Duration::from_secs(5);
/// How long an attempt is kept without a word (its worker may be lost).
const SILENCE: Duration = Duration::from_secs(600);
/// How many pieces a subscriber may be behind before it skips to the kept text.
const SUBSCRIBER_BUFFER: usize = 64;
/// How often a gap is looked for again in the saved text.
const RESYNC_EVERY: Duration = Duration::from_millis(250);
/// How often forgotten attempts and unwatched tasks are cleared.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What subscribers to a task hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text of `attempt` from byte `offset`; what a subscriber already has
    /// (by offset) it skips.
    Text {
        attempt: i32,
        offset: usize,
        text: String,
    },
    /// `attempt`'s text is complete.
    End { attempt: i32 },
}

/// What is kept of one task's latest attempt.
#[derive(Debug)]
struct Kept {
    attempt: i32,
    /// The attempt's text from its start, as far as it is known.
    text: String,
    /// Pieces heard past a gap, waiting for the saved text to fill it.
    waiting: Vec<OutputChunk>,
    /// The attempt's last piece was heard.
    ended: bool,
    heard_at: Instant,
}

impl Kept {
    fn new(attempt: i32) -> Self {
        Kept {
            attempt,
            text: String::new(),
            waiting: Vec::new(),
            ended: false,
            heard_at: Instant::now(),
        }
    }

    fn size(&self) -> usize {
        self.text.len() + self.waiting.iter().map(|c| c.text.len()).sum::<usize>()
    }

    /// Whether pieces are waiting for a gap to be filled.
    fn has_gap(&self) -> bool {
        !self.waiting.is_empty()
    }
}

#[derive(Default)]
struct State {
    kept: HashMap<i64, Kept>,
    subscribers: HashMap<i64, broadcast::Sender<Piece>>,
    /// Bytes in `kept`.
    bytes: usize,
}

struct Inner {
    pool: DbPool,
    state: Mutex<State>,
}

/// The process's output hub; cheap to clone.
#[derive(Clone)]
pub struct OutputHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OutputHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputHub").finish_non_exhaustive()
    }
}

/// A subscriber's view of one task's output; dropping it unsubscribes.
pub struct OutputFollower {
    task_id: i64,
    receiver: broadcast::Receiver<Piece>,
    inner: Arc<Inner>,
}

/// What a follower hears next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// The next piece.
    Piece(Piece),
    /// Pieces were skipped (the follower was slow): read the kept text.
    Behind,
}

fn lock(mutex: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change under the lock leaves the state whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl OutputHub {
    /// A hub that reads saved text from `pool`. It hears nothing until it is
    /// given a listener ([`OutputHub::listen_on`]).
    pub fn start(pool: DbPool) -> Self {
        let inner = Arc::new(Inner {
            pool,
            state: Mutex::new(State::default()),
        });
        tokio::spawn(sweep(Arc::downgrade(&inner)));
        OutputHub { inner }
    }

    /// Hears the pieces `listener` receives (it must listen on [`OUTPUT_CHANNEL`]).
    pub fn listen_on(&self, listener: &Listener) {
        let inner = Arc::downgrade(&self.inner);
        listener.on(OUTPUT_CHANNEL, move |heard| {
            let Some(inner) = inner.upgrade() else { return };
            match heard {
                Heard::Payload(payload) => {
                    if let Some(chunk) = OutputChunk::decode(payload) {
                        inner.hear(chunk);
                    }
                }
                Heard::Reconnected => inner.reread_all(),
            }
        });
    }

    /// Follows a task's output. Take it before reading anything about the
    /// task, so that no piece between the read and the follow is missed.
    pub fn follow(&self, task_id: i64) -> OutputFollower {
        let receiver = lock(&self.inner.state)
            .subscribers
            .entry(task_id)
            .or_insert_with(|| broadcast::channel(SUBSCRIBER_BUFFER).0)
            .subscribe();
        OutputFollower {
            task_id,
            receiver,
            inner: Arc::clone(&self.inner),
        }
    }

    /// How many attempts are kept, and their bytes (for tests and metrics).
    pub fn kept(&self) -> (usize, usize) {
        let state = lock(&self.inner.state);
        (state.kept.len(), state.bytes)
    }
}

impl OutputFollower {
    /// The next piece, or [`Next::Behind`] if some were skipped; `None`
    /// once the hub is gone.
    pub async fn next(&mut self) -> Option<Next> {
        match self.receiver.recv().await {
            Ok(piece) => Some(Next::Piece(piece)),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Next::Behind),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The task's latest attempt the hub keeps, and as much of its text from
    /// the start as it knows (while it fills a gap, the part before the gap).
    pub fn kept(&self) -> Option<(i32, String)> {
        let state = lock(&self.inner.state);
        let kept = state.kept.get(&self.task_id)?;
        Some((kept.attempt, kept.text.clone()))
    }
}

impl Drop for OutputFollower {
    fn drop(&mut self) {
        let mut state = lock(&self.inner.state);
        if state
            .subscribers
            .get(&self.task_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            state.subscribers.remove(&self.task_id);
        }
    }
}

impl Inner {
    /// Takes one piece heard on the channel.
    fn hear(self: &Arc<Self>, chunk: OutputChunk) {
        let mut state = lock(&self.state);
        let State {
            kept,
            subscribers,
            bytes,
        } = &mut *state;
        let task_id = chunk.task;
        let entry = kept
            .entry(task_id)
            .or_insert_with(|| Kept::new(chunk.attempt));
        if chunk.attempt < entry.attempt {
            return;
        }
        if chunk.attempt > entry.attempt {
            *bytes -= entry.size();
            *entry = Kept::new(chunk.attempt);
        }
        entry.heard_at = Instant::now();
        let before = entry.size();
        let send = |piece: Piece| {
            if let Some(sender) = subscribers.get(&task_id) {
                let _ = sender.send(piece);
            }
        };
        let offset = usize::try_from(chunk.offset).unwrap_or(usize::MAX);
        let started_gap = if entry.has_gap() || offset > entry.text.len() {
            let first = !entry.has_gap();
            entry.ended |= chunk.done;
            entry.waiting.push(chunk);
            first
        } else {
            let known = entry.text.len();
            // What the piece adds past the kept text (none if it is a repeat).
            if let Some(new) = chunk.text.get(known - offset..)
                && !new.is_empty()
            {
                entry.text.push_str(new);
                send(Piece::Text {
                    attempt: entry.attempt,
                    offset: known,
                    text: new.to_owned(),
                });
            }
            if chunk.done && !entry.ended {
                entry.ended = true;
                send(Piece::End {
                    attempt: entry.attempt,
                });
            }
            false
        };
        *bytes += entry.size() - before;
        let attempt = AttemptId {
            task_id,
            attempt: entry.attempt,
        };
        if *bytes > MAX_KEPT_BYTES || kept.len() > MAX_KEPT_ATTEMPTS {
            evict(&mut state, task_id);
        }
        drop(state);
        if started_gap {
            tokio::spawn(Arc::clone(self).fill_gap(attempt));
        }
    }
}

/// Forgets kept attempts, least recently heard first (never `keep`), until
/// the caps hold.
fn evict(state: &mut State, keep: i64) {
    let mut by_age: Vec<(Instant, i64)> = state
        .kept
        .iter()
        .filter(|(id, _)| **id != keep)
        .map(|(id, kept)| (kept.heard_at, *id))
        .collect();
    by_age.sort_unstable();
    for (_, id) in by_age {
        if state.bytes <= MAX_KEPT_BYTES && state.kept.len() <= MAX_KEPT_ATTEMPTS {
            break;
        }
        if let Some(kept) = state.kept.remove(&id) {
            state.bytes -= kept.size();
        }
    }
}

/// Forgets attempts that ended a while ago or went silent, and tasks no one
/// follows any more, until the hub is gone.
async fn sweep(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut state = lock(&inner.state);
        let now = Instant::now();
        let mut freed = 0;
        state.kept.retain(|_, kept| {
            let quiet = now.duration_since(kept.heard_at);
            let keep = !(kept.ended && quiet >= LINGER) && quiet < SILENCE;
            if !keep {
                freed += kept.size();
            }
            keep
        });
        state.bytes -= freed;
        state
            .subscribers
            .retain(|_, sender| sender.receiver_count() > 0);
    }
}
