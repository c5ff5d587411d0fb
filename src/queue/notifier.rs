//! Announces new tasks to idle workers: `NOTIFY taskrunner_task_due`, sent
//! after the task's INSERT has committed, coalesced so that a burst of
//! creates sends a few notifications, not one each.
//!
//! Why not a trigger on INSERT: a transaction that NOTIFYs holds a
//! database-wide lock through its commit, which serialises all such
//! transactions behind one another's WAL flushes. Sending from here keeps
//! createTask's own transaction free of it, and one NOTIFY covers every task
//! committed before it.

use std::sync::Arc;

use diesel_async::SimpleAsyncConnection;
use tokio::sync::Notify;

use crate::db::DbPool;
use crate::queue::listener::DUE_CHANNEL;

/// A handle to the process's notifier; cheap to clone.
#[derive(Clone, Debug)]
pub struct DueNotifier {
    wanted: Arc<Notify>,
}

impl DueNotifier {
    /// Starts the notifier's task, which sends on connections from `pool` and
    /// lives as long as the runtime.
    pub fn start(pool: DbPool) -> Self {
        let wanted = Arc::new(Notify::new());
        let signal = Arc::clone(&wanted);
        tokio::spawn(async move {
            // Requests that come while one NOTIFY is being sent wait as one
            // stored permit: they are all covered by the next NOTIFY.
            loop {
                signal.notified().await;
                let sent = match pool.get().await {
                    Ok(mut conn) => conn
                        .batch_execute(&format!("NOTIFY {DUE_CHANNEL}"))
                        .await
                        .map_err(|e| e.to_string()),
                    Err(error) => Err(error.to_string()),
                };
                if let Err(error) = sent {
                    // Workers still poll; the task is not lost, only later.
                    tracing::warn!(%error, "could not notify workers of new tasks");
                }
            }
        });
        DueNotifier { wanted }
    }

    /// Asks for a NOTIFY: call after a task that is due now has committed.
    pub fn task_due(&self) {
        self.wanted.notify_one();
    }
}
