//! Announces committed changes: the process's publisher queues each change
//! (kind, task id) without waiting, and one background task sends all that
//! queued since its last statement as `pg_notify` calls in one statement.
//!
//! Why after commit, from its own connection, and not a trigger: a
//! transaction that NOTIFYs holds a database-wide lock through its commit,
//! which serialises every such transaction behind one another's WAL flush
//! (it capped createTask at about 2,000/s here). One sender per process keeps
//! at most one such transaction per process at a time, however many changes
//! it carries. The same statement wakes idle workers when a task became due.

use std::sync::{Arc, Mutex};

use diesel::sql_types::{Array, Text};
use diesel_async::RunQueryDsl;
use tokio::sync::Notify;

use crate::db::DbPool;
use crate::events::{EVENTS_CHANNEL, TaskEventType, payload};
use crate::queue::DUE_CHANNEL;

/// The most changes kept while the database does not answer; past it the
/// oldest are dropped (subscribers re-read their tasks on their next event).
const MAX_QUEUED: usize = 100_000;

#[derive(Default)]
struct Queued {
    changes: Vec<(TaskEventType, i64)>,
    due: bool,
    dropped: usize,
    /// A statement is being sent.
    sending: bool,
}

/// A handle to the process's publisher; cheap to clone.
#[derive(Clone)]
pub struct ChangePublisher {
    queued: Arc<Mutex<Queued>>,
    wanted: Arc<Notify>,
}

impl std::fmt::Debug for ChangePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangePublisher").finish_non_exhaustive()
    }
}

impl ChangePublisher {
    /// Starts the publisher's task, which sends on connections from `pool` and
    /// lives as long as the runtime.
    pub fn start(pool: DbPool) -> Self {
        let publisher = ChangePublisher {
            queued: Arc::new(Mutex::new(Queued::default())),
            wanted: Arc::new(Notify::new()),
        };
        tokio::spawn(publisher.clone().run(pool));
        publisher
    }

    /// Announces a change to a task; call once it has committed.
    pub fn publish(&self, kind: TaskEventType, task_id: i64) {
        self.publish_all(kind, [task_id]);
    }

    /// Announces the same change to several tasks (one statement's rows).
    pub fn publish_all(&self, kind: TaskEventType, task_ids: impl IntoIterator<Item = i64>) {
        {
            let mut queued = self.lock();
            queued
                .changes
                .extend(task_ids.into_iter().map(|id| (kind, id)));
            if queued.changes.len() > MAX_QUEUED {
                let excess = queued.changes.len() - MAX_QUEUED;
                queued.changes.drain(..excess);
                queued.dropped += excess;
            }
        }
        self.wanted.notify_one();
    }

    /// Wakes idle workers: a task that is due now has committed.
    pub fn task_due(&self) {
        self.lock().due = true;
        self.wanted.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn run(self, pool: DbPool) {
        loop {
            // Changes queued while a statement is in flight wait as one stored
            // permit: they all go in the next statement.
            self.wanted.notified().await;
            let Queued {
                changes,
                due,
                dropped,
                ..
            } = std::mem::replace(
                &mut *self.lock(),
                Queued {
                    sending: true,
                    ..Queued::default()
                },
            );
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "task change notifications were dropped while the database did not answer"
                );
            }
            let mut channels = Vec::new();
            let mut payloads = payload::encode(&changes);
            channels.resize(payloads.len(), EVENTS_CHANNEL);
            if due {
                channels.push(DUE_CHANNEL);
                payloads.push(String::new());
            }
            if payloads.is_empty() {
                self.lock().sending = false;
                continue;
            }
            let sent = match pool.get().await {
                Ok(mut conn) => diesel::sql_query(
                    "SELECT pg_notify(channel, payload) FROM unnest($1::text[], $2::text[]) AS n(channel, payload)",
                )
                .bind::<Array<Text>, _>(&channels)
                .bind::<Array<Text>, _>(&payloads)
                .execute(&mut conn)
                .await
                .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = sent {
                // Workers still poll, and subscribers re-read on their next
                // event: late, not lost.
                tracing::warn!(%error, changes = changes.len(), "could not announce task changes");
            }
            self.lock().sending = false;
        }
    }

    /// Waits, at most `within`, until everything queued has been sent: a
    /// process that stops announces its last changes.
    pub async fn flush(&self, within: std::time::Duration) {
        let _ = tokio::time::timeout(within, async {
            loop {
                {
                    let queued = self.lock();
                    if queued.changes.is_empty() && !queued.due && !queued.sending {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}
