//! Streamed answers: providers that stream, the worker passing text on, the
//! `taskOutput` subscription and `Task.partialResult`, in one process and
//! across processes.

mod across_processes;
mod gaps;
mod provider;
mod subscription;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use taskrunner::AppState;
use taskrunner::output::OUTPUT_CHANNEL;
use taskrunner::output::wire::OutputChunk;
use taskrunner::providers::config::{ProvidersFile, router_from};
use taskrunner::providers::routing::ModelRouter;
use taskrunner::queue::Worker;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::harness::{TestApp, TestDb};
use crate::queue::test_config;
use crate::subscriptions::Received;

pub const TASK_OUTPUT: &str =
    "subscription($id: ID!) { taskOutput(id: $id) { taskId attempt text done } }";
pub const WITHIN: Duration = Duration::from_secs(30);

/// A chunk as a subscriber got it: (attempt, text, done).
pub type Chunk = (i64, String, bool);

/// The chunks of a `taskOutput` stream, and whether it completed after them.
pub fn chunks(received: &[Received]) -> (Vec<Chunk>, bool) {
    let mut chunks = Vec::new();
    for r in received {
        if let Received::Next(payload) = r {
            let chunk = &payload["data"]["taskOutput"];
            assert!(chunk.is_object(), "a chunk in {payload}");
            chunks.push(chunk_of(chunk));
        }
    }
    (chunks, received.last() == Some(&Received::Complete))
}

/// One `TaskOutputChunk` as JSON, read.
pub fn chunk_of(chunk: &Value) -> Chunk {
    (
        chunk["attempt"].as_i64().expect("attempt"),
        chunk["text"].as_str().expect("text").to_owned(),
        chunk["done"].as_bool().expect("done"),
    )
}

/// The text of the chunks of one attempt, joined.
pub fn text_of(chunks: &[Chunk], attempt: i64) -> String {
    chunks
        .iter()
        .filter(|(a, _, _)| *a == attempt)
        .map(|(_, text, _)| text.as_str())
        .collect()
}

/// Checks what every `taskOutput` stream must be: no empty chunk but the
/// last, exactly one done chunk and it last, attempts never going back.
pub fn assert_well_formed(chunks: &[Chunk]) {
    let (last, rest) = chunks.split_last().expect("at least one chunk");
    assert!(last.2, "the last chunk is done: {chunks:?}");
    assert!(
        rest.iter().all(|c| !c.2),
        "only the last is done: {chunks:?}"
    );
    assert!(
        rest.iter().all(|c| !c.1.is_empty()),
        "no empty chunk but the last: {chunks:?}"
    );
    assert!(
        chunks.windows(2).all(|pair| pair[0].0 <= pair[1].0),
        "attempts never go back: {chunks:?}"
    );
}

/// A router whose every model is an `echo` that waits `word_delay_ms` between words.
pub fn slow_echo(word_delay_ms: u64) -> Arc<ModelRouter> {
    let file: ProvidersFile = toml::from_str(&format!(
        "[[provider]]\nname = \"echo\"\nkind = \"echo\"\nmodel_prefixes = [\"\"]\nword_delay_ms = {word_delay_ms}"
    ))
    .expect("echo configuration");
    Arc::new(router_from(file.providers).expect("router"))
}

/// The service over a fresh database with every model routed by `router`.
pub async fn app_routed(router: Arc<ModelRouter>) -> TestApp {
    let db = TestDb::migrated().await;
    let state = AppState::new(db.pool(), router);
    TestApp {
        schema: taskrunner::graphql::schema(state.clone()),
        state,
        db,
    }
}

/// A worker on `app`'s database, with every model routed by `router`.
pub async fn worker_routed(app: &TestApp, router: Arc<ModelRouter>, slots: usize) -> Worker {
    Worker::start(&app.db.args(), router, test_config(slots))
        .await
        .expect("worker starts")
}

/// Every notification on the output channel of a database, decoded, with
/// its payload's size, heard on a connection of the test's own.
pub struct OutputTap {
    pub heard: mpsc::UnboundedReceiver<(OutputChunk, usize)>,
    _client: tokio_postgres::Client,
}

impl OutputTap {
    pub async fn listen(db: &TestDb) -> OutputTap {
        let (client, mut connection) = tokio_postgres::connect(&db.url, NoTls)
            .await
            .expect("connect to listen");
        let (heard, received) = mpsc::unbounded_channel();
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(notification) = message {
                    let payload = notification.payload();
                    let chunk = OutputChunk::decode(payload).expect("an output payload");
                    if heard.send((chunk, payload.len())).is_err() {
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {OUTPUT_CHANNEL}"))
            .await
            .expect("listen");
        OutputTap {
            heard: received,
            _client: client,
        }
    }

    /// The pieces heard up to and including the one that ends `task`'s attempt.
    pub async fn until_done(&mut self, task: i64) -> Vec<(OutputChunk, usize)> {
        let mut heard = Vec::new();
        loop {
            let next = tokio::time::timeout(WITHIN, self.heard.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no end of task {task}'s answer within {WITHIN:?}: {heard:?}")
                })
                .expect("still listening");
            let done = next.0.task == task && next.0.done;
            heard.push(next);
            if done {
                return heard;
            }
        }
    }
}
