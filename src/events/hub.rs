//! The API side of the backbone: hears change notifications, reads the
//! changed rows once per batch (only those someone watches), and fans them
//! out. A subscriber to one task holds a watch channel (it keeps only the
//! latest state, so a slow subscriber skips to it and never holds anyone
//! up); subscribers to every change share a broadcast channel whose laggards
//! skip ahead. No subscriber's pace reaches the listener or the publisher.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt};
use diesel_async::RunQueryDsl;
use tokio::sync::{Notify, broadcast, watch};

use crate::db::DbPool;
use crate::db::schema::tasks;
use crate::events::listener::{Heard, Listener};
use crate::events::{EVENTS_CHANNEL, TaskEventType, payload};
use crate::tasks::Task;

/// How many events the shared channel of `taskEvents` subscribers holds for
/// the slowest of them before it skips ahead.
const FIREHOSE_CAPACITY: usize = 4_096;

/// What a watcher of one task sees.
#[derive(Debug, Clone)]
pub enum Watched {
    /// The task as it is now.
    Current(Arc<Task>),
    /// The task was deleted; its last state.
    Deleted(Arc<Task>),
}

impl Watched {
    /// The task's state, current or last.
    pub fn task(&self) -> &Arc<Task> {
        match self {
            Watched::Current(task) | Watched::Deleted(task) => task,
        }
    }
}

/// A change to some task, for subscribers to every change.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    pub kind: TaskEventType,
    /// The task as it was read after the change (on DELETED, its last state).
    pub task: Arc<Task>,
}

/// Changes heard but not yet read.
#[derive(Default)]
struct Unread {
    changes: Vec<(TaskEventType, i64)>,
    /// The listener reconnected: re-read every watched task.
    reread: bool,
}

struct Inner {
    pool: DbPool,
    watchers: Mutex<HashMap<i64, watch::Sender<Option<Watched>>>>,
    firehose: broadcast::Sender<TaskEvent>,
    heard: Mutex<Unread>,
    wake: Notify,
}

/// The process's event hub; cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHub").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EventHub {
    /// A hub that reads rows from `pool`. It hears nothing until it is given a
    /// listener ([`EventHub::listen_on`]).
    pub fn start(pool: DbPool) -> Self {
        let (firehose, _) = broadcast::channel(FIREHOSE_CAPACITY);
        let hub = EventHub {
            inner: Arc::new(Inner {
                pool,
                watchers: Mutex::new(HashMap::new()),
                firehose,
                heard: Mutex::new(Unread::default()),
                wake: Notify::new(),
            }),
        };
        tokio::spawn(Arc::clone(&hub.inner).run());
        hub
    }

    /// Hears the change notifications `listener` receives (it must listen on
    /// [`EVENTS_CHANNEL`]).
    pub fn listen_on(&self, listener: &Listener) {
        let inner = Arc::downgrade(&self.inner);
        listener.on(EVENTS_CHANNEL, move |heard| {
            let Some(inner) = inner.upgrade() else { return };
            {
                let mut queued = lock(&inner.heard);
                match heard {
                    Heard::Payload(text) => payload::decode(text, &mut queued.changes),
                    Heard::Reconnected => queued.reread = true,
                }
            }
            inner.wake.notify_one();
        });
    }

    /// Watches one task. Take the watch before reading the task, so that no
    /// change between the read and the watch is missed.
    pub fn watch_task(&self, id: i64) -> TaskWatch {
        let receiver = lock(&self.inner.watchers)
            .entry(id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        TaskWatch {
            id,
            receiver,
            inner: Arc::clone(&self.inner),
        }
    }

    /// Every change to every task, from now on. A receiver that falls more
    /// than a few thousand events behind skips the oldest (`Lagged`).
    pub fn all_changes(&self) -> broadcast::Receiver<TaskEvent> {
        self.inner.firehose.subscribe()
    }

    /// How many tasks are watched (for tests and metrics).
    pub fn watched_tasks(&self) -> usize {
        lock(&self.inner.watchers).len()
    }
}

/// A subscription to one task's changes; dropping it unsubscribes.
pub struct TaskWatch {
    id: i64,
    receiver: watch::Receiver<Option<Watched>>,
    inner: Arc<Inner>,
}

impl TaskWatch {
    /// The next state of the task (the latest, if several changes came since
    /// the last call); `None` once the hub is gone.
    pub async fn next(&mut self) -> Option<Watched> {
        loop {
            self.receiver.changed().await.ok()?;
            if let Some(watched) = self.receiver.borrow_and_update().clone() {
                return Some(watched);
            }
        }
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        let mut watchers = lock(&self.inner.watchers);
        // This receiver is still counted while it drops.
        if watchers
            .get(&self.id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            watchers.remove(&self.id);
        }
    }
}

/// Whether `new` says something `old` did not.
fn differs(old: Option<&Watched>, new: &Watched) -> bool {
    match (old, new) {
        (None, _) => true,
        (Some(Watched::Current(old)), Watched::Current(new)) => old != new,
        (Some(Watched::Deleted(_)), _) => false,
        (Some(Watched::Current(_)), Watched::Deleted(_)) => true,
    }
}

impl Inner {
    /// Reads and delivers what was heard, one batch at a time: changes heard
    /// while a batch is read go into the next.
    async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let Unread { changes, reread } = std::mem::take(&mut *lock(&self.heard));
            if let Err(error) = self.deliver(changes, reread).await {
                // The subscribers keep their last state and get the next one
                // once the database answers again.
                tracing::warn!(%error, "could not read changed tasks for subscribers");
            }
        }
    }

    async fn deliver(
        &self,
        changes: Vec<(TaskEventType, i64)>,
        reread: bool,
    ) -> anyhow::Result<()> {
        let everything = self.firehose.receiver_count() > 0;
        let mut live: HashSet<i64> = HashSet::new();
        let mut deleted: HashSet<i64> = HashSet::new();
        {
            let watchers = lock(&self.watchers);
            for &(kind, id) in &changes {
                if everything || watchers.contains_key(&id) {
                    match kind {
                        TaskEventType::Deleted => deleted.insert(id),
                        _ => live.insert(id),
                    };
                }
            }
            if reread {
                // A watched task may have been deleted meanwhile: look for
                // its tombstone too.
                live.extend(watchers.keys().copied());
                deleted.extend(watchers.keys().copied());
            }
        }
        if live.is_empty() && deleted.is_empty() {
            return Ok(());
        }
        let mut conn = self.pool.get().await?;
        let rows: Vec<Task> = if live.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<i64> = live.into_iter().collect();
            tasks::table
                .filter(tasks::id.eq_any(&ids))
                .select(Task::as_select())
                .load(&mut conn)
                .await?
        };
        let gone: Vec<Task> = if deleted.is_empty() {
            Vec::new()
        } else {
            let ids: Vec<i64> = deleted.into_iter().collect();
            diesel::sql_query("SELECT * FROM task_tombstones WHERE id = ANY($1)")
                .bind::<Array<BigInt>, _>(&ids)
                .load(&mut conn)
                .await?
        };
        drop(conn);
        let rows: HashMap<i64, Arc<Task>> = rows.into_iter().map(|t| (t.id, Arc::new(t))).collect();
        let gone: HashMap<i64, Arc<Task>> = gone.into_iter().map(|t| (t.id, Arc::new(t))).collect();

        let watchers = lock(&self.watchers);
        for (kind, id) in changes {
            let watched = match kind {
                TaskEventType::Deleted => gone.get(&id).map(|t| Watched::Deleted(Arc::clone(t))),
                // Deleted since: its DELETED event follows.
                _ => rows.get(&id).map(|t| Watched::Current(Arc::clone(t))),
            };
            // One batch may name a task several times; its row is read once,
            // so each of its events carries the state read.
            let Some(watched) = watched else { continue };
            if everything {
                let _ = self.firehose.send(TaskEvent {
                    kind,
                    task: Arc::clone(watched.task()),
                });
            }
            if let Some(sender) = watchers.get(&id) {
                sender.send_if_modified(|current| {
                    let changed = differs(current.as_ref(), &watched);
                    if changed {
                        *current = Some(watched);
                    }
                    changed
                });
            }
        }
        if reread {
            let found = rows
                .iter()
                .map(|(id, task)| (id, Watched::Current(Arc::clone(task))))
                .chain(
                    gone.iter()
                        .filter(|(id, _)| !rows.contains_key(id))
                        .map(|(id, task)| (id, Watched::Deleted(Arc::clone(task)))),
                );
            for (id, watched) in found {
                if let Some(sender) = watchers.get(id) {
                    sender.send_if_modified(|current| {
                        let changed = differs(current.as_ref(), &watched);
                        if changed {
                            *current = Some(watched);
                        }
                        changed
                    });
                }
            }
        }
        Ok(())
    }
}
