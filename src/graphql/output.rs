//! Streamed answers over GraphQL: the `taskOutput` subscription, the answer
//! of a task as its model writes it (see `output::follow`).

use async_graphql::{Context, ID, SimpleObject, Subscription};
use futures_util::Stream;
use futures_util::stream::StreamExt;

use crate::app::AppState;
use crate::error::ApiError;
use crate::graphql::principal;
use crate::output::{AnswerChunk, follow};
use crate::tasks::validation::parse_task_id;

/// A piece of a task's answer.
#[derive(SimpleObject)]
pub struct TaskOutputChunk {
    /// The task.
    task_id: ID,
    /// The attempt whose answer this is: a retry's answer starts over, with
    /// its own attempt number.
    attempt: i32,
    /// The next piece of the attempt's answer. The first chunk a subscriber
    /// gets holds all the text written so far; the last may be empty.
    text: String,
    /// The task is final (SUCCEEDED, FAILED, CANCELLED, or deleted): this is
    /// the last chunk.
    done: bool,
}

impl From<AnswerChunk> for TaskOutputChunk {
    fn from(chunk: AnswerChunk) -> Self {
        TaskOutputChunk {
            task_id: ID(chunk.task_id.to_string()),
            attempt: chunk.attempt,
            text: chunk.text,
            done: chunk.done,
        }
    }
}

/// The subscriptions on tasks' answers.
#[derive(Default)]
pub struct OutputSubscriptions;

#[Subscription]
impl OutputSubscriptions {
    /// The task's answer as its model writes it. While it runs, the first
    /// chunk is the current attempt's text so far, then each piece follows
    /// as it is written; an attempt that fails and is retried is followed by
    /// the retry's answer from its start (a new `attempt`). The last chunk
    /// has `done: true`: on success it completes the stored `result`. A
    /// finished task gives one chunk, its whole result (empty if it has
    /// none). NOT_FOUND if there is no such task (or it is another tenant's).
    async fn task_output(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The task's id.")] id: ID,
    ) -> async_graphql::Result<impl Stream<Item = TaskOutputChunk> + use<>> {
        let id = parse_task_id(&id).map_err(ApiError::from)?;
        let state = ctx.data::<AppState>()?;
        let chunks = follow::follow(state, &principal(ctx)?.scope(), id).await?;
        Ok(chunks.map(TaskOutputChunk::from))
    }
}
