//! The worker runtime of one process: claims tasks into free slots, runs each
//! on its provider with no database connection held, renews leases, rescues
//! the tasks of dead workers, records outcomes in batches, and shuts down
//! gracefully.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::config::DatabaseArgs;
use crate::db::DbPool;
use crate::providers::CompletionRequest;
use crate::providers::routing::ModelRouter;
use crate::queue::outcome::{Backoff, Outcome, Verdict};
use crate::queue::{listener, store};
use crate::tasks::Task;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Tasks in flight at once.
    pub slots: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How long running tasks may take to finish at shutdown.
    pub shutdown_grace: Duration,
    /// The limit on one attempt when the task sets none.
    pub default_timeout: Duration,
    /// Most tasks per claim.
    pub claim_batch: usize,
    /// How often to look for work without a notification.
    pub poll_interval: Duration,
    /// Retry delays.
    pub backoff: Backoff,
}

/// Why a running attempt is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// cancelTask asked for it: record CANCELLED.
    Cancel,
    /// Another worker may hold it now: record nothing.
    LeaseLost,
    /// This process is stopping: hand it back.
    Shutdown,
}

/// An attempt in flight.
struct Running {
    stop: Option<oneshot::Sender<StopReason>>,
}

/// What the worker's tasks share.
struct Shared {
    id: String,
    pool: DbPool,
    router: Arc<ModelRouter>,
    config: WorkerConfig,
    in_flight: Mutex<HashMap<i64, Running>>,
    slots: Arc<Semaphore>,
    /// Wakes the claim loop: a task became due, or slots were freed.
    wake: Arc<Notify>,
    /// Rung whenever an attempt is done with, for shutdown's wait.
    settled: Notify,
}

impl Shared {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Running>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (each operation is a single insert or remove), so poisoning is ignored.
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stop(&self, task_id: i64, reason: StopReason) {
        if let Some(running) = self.in_flight().get_mut(&task_id)
            && let Some(stop) = running.stop.take()
        {
            let _ = stop.send(reason);
        }
    }

    fn in_flight_ids(&self) -> Vec<i64> {
        self.in_flight().keys().copied().collect()
    }
}

/// A running worker. Stop it with [`Worker::shutdown`].
pub struct Worker {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    background: JoinSet<()>,
    claim_loop: tokio::task::JoinHandle<()>,
    completer: tokio::task::JoinHandle<()>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl Worker {
    /// Starts a worker: its claim loop, listener, heartbeat, rescuer and
    /// completion writer. Returns once it is listening for notifications (so
    /// none sent after this returns is missed).
    pub async fn start(
        pool: DbPool,
        database: &DatabaseArgs,
        router: Arc<ModelRouter>,
        config: WorkerConfig,
    ) -> Worker {
        let id = worker_id();
        tracing::info!(worker = %id, slots = config.slots, lease = ?config.lease, "worker starting");
        let (stop, stop_rx) = watch::channel(false);
        let (outcomes, outcome_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            id,
            pool,
            router,
            slots: Arc::new(Semaphore::new(config.slots)),
            config,
            in_flight: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            settled: Notify::new(),
        });

        let mut background = JoinSet::new();
        let (ready, listening) = oneshot::channel();
        let on_cancel = {
            let shared = Arc::clone(&shared);
            move |task_id| shared.stop(task_id, StopReason::Cancel)
        };
        background.spawn(listener::listen(
            database.database_url.clone(),
            database.timeout(),
            Arc::clone(&shared.wake),
            on_cancel,
            ready,
            stop_rx.clone(),
        ));
        let _ = listening.await;
        background.spawn(heartbeat(Arc::clone(&shared), stop_rx.clone()));
        background.spawn(rescuer(Arc::clone(&shared), stop_rx.clone()));
        let completer = tokio::spawn(record_outcomes(Arc::clone(&shared), outcome_rx));
        let claim_loop = tokio::spawn(claim_loop(Arc::clone(&shared), outcomes.clone(), stop_rx));
        Worker {
            shared,
            stop,
            background,
            claim_loop,
            completer,
            outcomes,
        }
    }

    /// This worker's id, as recorded in the tasks it holds.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Stops claiming, lets running tasks finish within the grace period,
    /// then hands the rest back to the queue for another worker at once.
    pub async fn shutdown(self) {
        let Worker {
            shared,
            stop,
            mut background,
            claim_loop,
            completer,
            outcomes,
        } = self;
        let _ = stop.send(true);
        let _ = claim_loop.await;
        let running = shared.in_flight().len();
        tracing::info!(worker = %shared.id, running, grace = ?shared.config.shutdown_grace, "worker stopping");

        let finished = tokio::time::timeout(shared.config.shutdown_grace, async {
            loop {
                let settled = shared.settled.notified();
                if shared.in_flight().is_empty() {
                    break;
                }
                settled.await;
            }
        })
        .await;
        if finished.is_err() {
            let unfinished = shared.in_flight_ids();
            for task_id in &unfinished {
                shared.stop(*task_id, StopReason::Shutdown);
            }
            match shared.pool.get().await {
                Ok(mut conn) => match store::release(&mut conn, &shared.id, &unfinished).await {
                    Ok(released) => {
                        tracing::info!(released, "handed unfinished tasks back to the queue")
                    }
                    Err(error) => {
                        tracing::error!(%error, "could not hand tasks back; they return when their lease expires")
                    }
                },
                Err(error) => {
                    tracing::error!(%error, "could not hand tasks back; they return when their lease expires")
                }
            }
        }
        // Let the completion writer flush what finished, then stop the rest.
        drop(outcomes);
        let _ = completer.await;
        background.shutdown().await;
        tracing::info!(worker = %shared.id, "worker stopped");
    }
}

/// A worker id unique across machines and restarts: host, process, random.
fn worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "host".to_owned());
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    format!("{host}-{}-{suffix}", std::process::id())
}

/// Claims as many due tasks as there are free slots, whenever woken (a
/// notification, a freed slot, the next delayed task falling due, or the
/// polling interval).
async fn claim_loop(
    shared: Arc<Shared>,
    outcomes: mpsc::UnboundedSender<Outcome>,
    mut stop: watch::Receiver<bool>,
) {
    let config = &shared.config;
    let mut failures = 0u32;
    while !*stop.borrow() {
        let mut sleep_for = config.poll_interval;
        loop {
            // Finished attempts whose outcomes are still being written keep
            // their place in `in_flight`; at most one slot's worth waits.
            let backlog_room = (2 * config.slots).saturating_sub(shared.in_flight().len());
            let free = shared
                .slots
                .available_permits()
                .min(config.claim_batch)
                .min(backlog_room);
            if free == 0 {
                break;
            }
            let claimed = match shared.pool.get().await {
                Ok(mut conn) => {
                    let claimed =
                        store::claim_batch(&mut conn, &shared.id, free as i64, config.lease).await;
                    if let Ok(tasks) = &claimed
                        && tasks.len() < free
                    {
                        // The queue is drained of due tasks: sleep until the next one is due.
                        if let Ok(Some(next)) = store::next_due_at(&mut conn).await {
                            let until = (next - chrono::Utc::now())
                                .to_std()
                                .unwrap_or(Duration::ZERO);
                            sleep_for = sleep_for.min(until.max(Duration::from_millis(5)));
                        }
                    }
                    claimed.map_err(|e| e.to_string())
                }
                Err(error) => Err(error.to_string()),
            };
            match claimed {
                Ok(tasks) => {
                    failures = 0;
                    let drained = tasks.len() < free;
                    for task in tasks {
                        let Ok(permit) = Arc::clone(&shared.slots).try_acquire_owned() else {
                            break; // cannot happen: only this loop takes slots
                        };
                        start_attempt(&shared, task, permit, outcomes.clone());
                    }
                    if drained {
                        break;
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "could not claim tasks; retrying");
                    sleep_for = Duration::from_millis(100 * u64::from(failures.min(50)));
                    break;
                }
            }
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Runs one claimed attempt in its own task.
fn start_attempt(
    shared: &Arc<Shared>,
    task: Task,
    permit: OwnedSemaphorePermit,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    let (stop, stopped) = oneshot::channel();
    shared
        .in_flight()
        .insert(task.id, Running { stop: Some(stop) });
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let (task_id, attempt) = (task.id, task.attempts);
        let run = guard_panics(attempt, shared.config.backoff, run_attempt(&shared, task));
        let verdict = tokio::select! {
            verdict = run => Some(verdict),
            reason = stopped => match reason {
                Ok(StopReason::Cancel) => Some(Verdict::Cancelled),
                Ok(StopReason::LeaseLost) | Ok(StopReason::Shutdown) | Err(_) => None,
            },
        };
        // The slot is free as soon as the attempt is: the next claim overlaps
        // with writing this outcome.
        drop(permit);
        match verdict {
            Some(verdict) => {
                let outcome = Outcome {
                    task_id,
                    attempt,
                    verdict,
                };
                if outcomes.send(outcome).is_err() {
                    shared.in_flight().remove(&task_id);
                    shared.settled.notify_waiters();
                }
            }
            None => {
                shared.in_flight().remove(&task_id);
                shared.settled.notify_waiters();
            }
        }
        shared.wake.notify_one();
    });
}

/// Calls the task's provider, within its timeout.
async fn run_attempt(shared: &Shared, task: Task) -> Verdict {
    let Some(entry) = shared.router.resolve(&task.model) else {
        return Verdict::Failed {
            error: shared.router.unknown_model_message(&task.model),
        };
    };
    let timeout = task
        .timeout_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(shared.config.default_timeout, Duration::from_secs);
    let request = CompletionRequest {
        model: task.model,
        prompt: task.prompt,
        system: task.system_prompt,
        temperature: task.temperature,
        max_tokens: task.max_tokens,
    };
    let Ok(_limit) = entry.limiter.acquire().await else {
        return Verdict::Failed {
            error: format!("provider {} is shut down", entry.name),
        };
    };
    match tokio::time::timeout(timeout, entry.provider.complete(&request)).await {
        Ok(Ok(completion)) => Verdict::Succeeded(completion),
        Ok(Err(error)) => {
            Verdict::from_provider_error(error, task.attempts, &shared.config.backoff)
        }
        Err(_) => Verdict::Retry {
            error: format!("the attempt timed out after {} s", timeout.as_secs()),
            delay: shared.config.backoff.delay(task.attempts, None),
        },
    }
}

/// Turns a panic while running an attempt into a failed (retryable) attempt,
/// so that one task's bug never takes the worker down.
async fn guard_panics(
    attempt: i32,
    backoff: Backoff,
    run: impl std::future::Future<Output = Verdict>,
) -> Verdict {
    AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            tracing::error!(%message, "a task panicked");
            Verdict::Retry {
                error: format!("the worker panicked while running the task: {message}"),
                delay: backoff.delay(attempt, None),
            }
        })
}

/// Writes outcomes in batches: whatever has finished while the last batch was
/// being written goes in the next.
async fn record_outcomes(shared: Arc<Shared>, mut received: mpsc::UnboundedReceiver<Outcome>) {
    const BATCH: usize = 1024;
    let mut batch = Vec::with_capacity(BATCH);
    while received.recv_many(&mut batch, BATCH).await > 0 {
        let outcomes = std::mem::take(&mut batch);
        let mut failures = 0u32;
        let written = loop {
            let result = match shared.pool.get().await {
                Ok(mut conn) => store::record_outcomes(&mut conn, &shared.id, &outcomes)
                    .await
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            match result {
                Ok(written) => break written,
                Err(error) => {
                    failures += 1;
                    // Outcomes are kept until stored; the leases they hold are
                    // renewed meanwhile, so nothing is lost while the database is away.
                    tracing::warn!(%error, pending = outcomes.len(), "could not record outcomes; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(failures.min(50))))
                        .await;
                }
            }
        };
        if written.len() < outcomes.len() {
            let skipped: Vec<i64> = outcomes
                .iter()
                .map(|o| o.task_id)
                .filter(|id| !written.contains(id))
                .collect();
            tracing::warn!(tasks = ?skipped, "outcomes not recorded: these tasks are no longer this worker's (lease lost)");
        }
        {
            let mut in_flight = shared.in_flight();
            for outcome in &outcomes {
                in_flight.remove(&outcome.task_id);
            }
        }
        shared.settled.notify_waiters();
        shared.wake.notify_one();
    }
}

/// Renews the leases of this worker's tasks every third of the lease, and
/// stops those it no longer holds or whose cancellation was asked for.
async fn heartbeat(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = shared.config.lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => {}
        }
        let ids = shared.in_flight_ids();
        // Keep renewing during shutdown's grace period, until nothing runs.
        if *stop.borrow() && ids.is_empty() {
            return;
        }
        if ids.is_empty() {
            continue;
        }
        let renewed = match shared.pool.get().await {
            Ok(mut conn) => store::heartbeat(&mut conn, &shared.id, &ids, shared.config.lease)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match renewed {
            Ok(states) => {
                for state in &states {
                    if state.cancel_requested {
                        shared.stop(state.id, StopReason::Cancel);
                    }
                }
                for id in ids {
                    if !states.iter().any(|state| state.id == id) {
                        tracing::warn!(task = id, "lease lost; abandoning the attempt");
                        shared.stop(id, StopReason::LeaseLost);
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not renew leases"),
        }
    }
}

/// Returns the tasks of dead workers to the queue, every half lease.
async fn rescuer(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = shared.config.lease / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        let rescued = match shared.pool.get().await {
            Ok(mut conn) => store::rescue_expired(&mut conn, 1000)
                .await
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match rescued {
            Ok(0) => {}
            Ok(rescued) => {
                tracing::warn!(
                    rescued,
                    "returned tasks of unresponsive workers to the queue"
                );
                shared.wake.notify_one();
            }
            Err(error) => tracing::warn!(%error, "could not rescue expired leases"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_attempt_becomes_a_retryable_failure() {
        let verdict = guard_panics(1, Backoff::default(), async {
            if std::hint::black_box(true) {
                panic!("index out of bounds");
            }
            Verdict::Cancelled
        })
        .await;
        match verdict {
            Verdict::Retry { error, .. } => {
                assert!(error.contains("index out of bounds"), "{error}")
            }
            other => panic!("expected a retry, got {other:?}"),
        }
        // And an attempt that does not panic passes through untouched.
        assert_eq!(
            guard_panics(1, Backoff::default(), async { Verdict::Cancelled }).await,
            Verdict::Cancelled
        );
    }
}
