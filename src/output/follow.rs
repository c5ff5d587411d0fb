//! One subscriber's view of a task's answer, as `taskOutput` sends it: the
//! text so far of the current attempt as one chunk, then each new piece,
//! starting over when a new attempt starts, and a last chunk marked done
//! once the task is final.
//!
//! Two sources drive it: the output hub (pieces, by attempt and byte offset)
//! and the event hub (the task's state). The offsets make every piece count
//! once: what a subscriber has is skipped, a gap is filled from the text
//! the hub keeps. The task's final state ends the stream, and a success
//! carries its stored result, so whatever pieces were missed, the answer a
//! subscriber ends with is the stored one.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use futures_util::Stream;
use futures_util::stream;

use crate::app::AppState;
use crate::error::ApiError;
use crate::events::{TaskWatch, Watched};
use crate::output::hub::{Next, OutputFollower, Piece};
use crate::output::store;
use crate::queue::AttemptId;
use crate::tasks::Scope;
use crate::tasks::{Task, TaskStatus};

/// A piece of a task's answer, as a subscriber gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerChunk {
    pub task_id: i64,
    /// The attempt whose text this is.
    pub attempt: i32,
    /// The next piece of that attempt's text (empty only on the last chunk).
    pub text: String,
    /// The task is final: nothing follows.
    pub done: bool,
}

/// Where a subscriber is in a task's answer.
struct Reader {
    task_id: i64,
    /// The attempt being followed.
    attempt: i32,
    /// Bytes of its text sent; `usize::MAX` while waiting for the next
    /// attempt (none of this one's text is wanted).
    sent: usize,
    /// The latest state of the task seen, to tell a late delivery of an
    /// older state from news.
    updated_at: DateTime<Utc>,
    watch: TaskWatch,
    follower: Option<OutputFollower>,
    ready: VecDeque<AnswerChunk>,
    finished: bool,
}

/// Follows task `task_id`'s answer. NOT_FOUND if there is no such task
/// within `scope`; a final task gives one chunk, its whole result, marked done.
pub async fn follow(
    state: &AppState,
    scope: &Scope,
    task_id: i64,
) -> Result<impl Stream<Item = AnswerChunk> + use<>, ApiError> {
    // Follow before reading, so that nothing between the two is missed.
    let watch = state.events().watch_task(task_id);
    let follower = state.output().follow(task_id);
    let mut conn = state.db().await?;
    let task = crate::tasks::store::find(&mut conn, scope, task_id)
        .await?
        .ok_or(ApiError::NotFound(task_id))?;
    let mut reader = Reader {
        task_id,
        attempt: task.attempts,
        sent: usize::MAX,
        updated_at: task.updated_at,
        watch,
        follower: Some(follower),
        ready: VecDeque::new(),
        finished: false,
    };
    if is_final(&task) {
        reader.finish(&task);
    } else if task.status == TaskStatus::Running {
        reader.sent = 0;
        let kept = reader.follower.as_ref().and_then(OutputFollower::kept);
        let text_so_far = match kept {
            Some((attempt, text)) if attempt >= task.attempts => {
                reader.attempt = attempt;
                Some(text)
            }
            _ => {
                let attempt = AttemptId {
                    task_id,
                    attempt: task.attempts,
                };
                store::saved_text(&mut conn, attempt).await?
            }
        };
        reader.take(reader.attempt, 0, &text_so_far.unwrap_or_default());
    }
    drop(conn);
    Ok(stream::unfold(reader, |mut reader| async move {
        let chunk = reader.next_chunk().await?;
        Some((chunk, reader))
    }))
}

/// Whether a task has reached a state it leaves only by `retryTask`.
fn is_final(task: &Task) -> bool {
    matches!(
        task.status,
        TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
    )
}

impl Reader {
    async fn next_chunk(&mut self) -> Option<AnswerChunk> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Some(chunk);
            }
            if self.finished {
                return None;
            }
            let piece = async {
                match &mut self.follower {
                    Some(follower) => follower.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                next = piece => match next {
                    Some(Next::Piece(Piece::Text { attempt, offset, text })) => {
                        self.take(attempt, offset, &text);
                    }
                    // The task's next state says what comes next.
                    Some(Next::Piece(Piece::End { .. })) => {}
                    Some(Next::Behind) => self.catch_up(),
                    None => self.follower = None,
                },
                watched = self.watch.next() => match watched {
                    Some(Watched::Current(task)) => self.changed(&task),
                    Some(Watched::Deleted(task)) => {
                        self.done(task.attempts, String::new());
                    }
                    None => self.finished = true,
                },
            }
        }
    }

    /// Takes text of `attempt` from byte `offset`: a newer attempt starts
    /// over; what was sent is skipped; a gap is filled from the kept text.
    fn take(&mut self, attempt: i32, offset: usize, text: &str) {
        if attempt < self.attempt {
            return;
        }
        if attempt > self.attempt {
            self.attempt = attempt;
            self.sent = 0;
        }
        let end = offset + text.len();
        if self.sent == usize::MAX || end <= self.sent {
            return;
        }
        match text.get(self.sent.saturating_sub(offset)..) {
            Some(new) if offset <= self.sent => {
                self.send(new.to_owned());
                self.sent = end;
            }
            _ => self.catch_up(),
        }
    }

    /// Sends what the hub keeps past what was sent (after a gap, or after
    /// falling behind).
    fn catch_up(&mut self) {
        let Some((attempt, text)) = self.follower.as_ref().and_then(OutputFollower::kept) else {
            return;
        };
        if attempt < self.attempt || (attempt == self.attempt && self.sent == usize::MAX) {
            return;
        }
        if attempt > self.attempt {
            self.attempt = attempt;
            self.sent = 0;
        }
        if let Some(new) = text.get(self.sent..)
            && !new.is_empty()
        {
            self.send(new.to_owned());
            self.sent = text.len();
        }
    }

    /// Takes a new state of the task.
    fn changed(&mut self, task: &Task) {
        if task.updated_at < self.updated_at {
            return;
        }
        self.updated_at = task.updated_at;
        if is_final(task) {
            self.finish(task);
        } else if task.status == TaskStatus::Running && task.attempts > self.attempt {
            self.attempt = task.attempts;
            self.sent = 0;
            // Pieces of it may have come first.
            self.catch_up();
        }
    }

    /// Ends with the final chunk: a success's result past what was sent of
    /// its attempt (all of it if its attempt was not followed), else nothing.
    fn finish(&mut self, task: &Task) {
        let result = match (&task.status, &task.result) {
            (TaskStatus::Succeeded, Some(result)) => result.as_str(),
            _ => "",
        };
        let rest = if task.attempts == self.attempt && self.sent != usize::MAX {
            result.get(self.sent..).unwrap_or_default()
        } else {
            result
        };
        self.done(task.attempts, rest.to_owned());
    }

    fn send(&mut self, text: String) {
        if !text.is_empty() {
            self.ready.push_back(AnswerChunk {
                task_id: self.task_id,
                attempt: self.attempt,
                text,
                done: false,
            });
        }
    }

    fn done(&mut self, attempt: i32, text: String) {
        self.ready.push_back(AnswerChunk {
            task_id: self.task_id,
            attempt,
            text,
            done: true,
        });
        self.finished = true;
        // Nothing more is read.
        self.follower = None;
    }
}
