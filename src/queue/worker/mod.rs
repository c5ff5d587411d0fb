//! The worker runtime of one process. It claims tasks into free slots
//! (`claim_loop`), runs each attempt on its provider with no database
//! connection held (`attempt`), keeps its lease and learns of cancellations
//! and lost tasks (`leases`), records outcomes in batches (`outcome_writer`),
//! rescues the tasks of lost workers and keeps the queue tidy (`upkeep`),
//! passes its attempts' text on as providers write it (`crate::output`), and
//! shuts down within a bounded time.
//!
//! Its database work goes through a pool of its own, apart from the API's,
//! so that no request load can delay a heartbeat; and every statement it runs
//! is bounded in time, so that a database that stops answering cannot hold it.

mod attempt;
mod claim_loop;
mod leases;
mod outcome_writer;
mod upkeep;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::DatabaseArgs;
use crate::db::{self, DbConn, DbPool};
use crate::events::{ChangePublisher, Heard, Listener, TaskEventType};
use crate::metrics::{AttemptOutcome, Metrics, ModelLabel, PoolName};
use crate::output::book::OutputBook;
use crate::output::writer::{self as output_writer, WriterConfig};
use crate::providers::routing::ModelRouter;
use crate::queue::outcome::{AttemptId, Backoff, Outcome, Verdict};
use crate::queue::{CANCEL_CHANNEL, DUE_CHANNEL, store};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Tasks in flight at once.
    pub slots: usize,
    /// How long the worker's claim on its tasks lasts without a heartbeat.
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

/// The most time the steps after the grace period may take together (hand
/// unfinished tasks back, store the last outcomes, leave): shutdown takes at
/// most the grace period plus this, even with the database unreachable.
pub const SHUTDOWN_FLUSH: Duration = Duration::from_secs(3);

/// Why a running attempt is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// cancelTask asked for it: record CANCELLED.
    Cancel,
    /// The database says another worker may hold it now: record nothing.
    LeaseLost,
    /// This process is stopping: hand it back.
    Shutdown,
}

/// An attempt in flight, from its claim until its outcome is stored.
struct Running {
    stop: Option<oneshot::Sender<StopReason>>,
    /// When it was claimed: a heartbeat only judges attempts claimed before it asked.
    since: Instant,
    /// Its outcome is on its way to the database: nothing can stop it now.
    finished: bool,
    /// Its task's model, as the metrics label it.
    model: ModelLabel,
    /// Whether it is the task's last attempt (a retry then ends it FAILED).
    last: bool,
}

/// Why a database step did not happen.
#[derive(Debug)]
enum DbFailure {
    /// No connection, or no answer in time: nothing is known of the rows.
    Unavailable(String),
    /// The statement failed.
    Statement(diesel::result::Error),
}

impl DbFailure {
    /// Whether the failure may be the rows' fault.
    fn blames_rows(&self) -> bool {
        matches!(self, DbFailure::Statement(error) if !db::is_transient(error))
    }

    /// Whether splitting the batch may help (see `store::Splitter`): the
    /// failure may be the rows' fault, or the batch took too long.
    fn worth_splitting(&self) -> bool {
        self.blames_rows()
            || matches!(self, DbFailure::Statement(error) if db::is_statement_timeout(error))
    }
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbFailure::Unavailable(reason) => f.write_str(reason),
            DbFailure::Statement(error) => f.write_str(&store::describe(error)),
        }
    }
}

/// What the worker's tasks share.
struct Shared {
    id: String,
    pool: DbPool,
    router: Arc<ModelRouter>,
    config: WorkerConfig,
    /// Announces the changes the worker's statements make.
    changes: ChangePublisher,
    /// The longest one database step may take, waiting for a connection included.
    step_timeout: Duration,
    in_flight: Mutex<HashMap<AttemptId, Running>>,
    /// Attempts the database says are ours but we do not run (a claim whose
    /// answer was lost): the claim loop adopts them.
    orphans: Mutex<Vec<AttemptId>>,
    /// Attempts whose task the database would neither record nor fail: never adopted.
    stuck: Mutex<HashSet<AttemptId>>,
    slots: Arc<Semaphore>,
    /// Wakes the claim loop: a task became due, slots were freed, orphans found.
    wake: Notify,
    /// Rung whenever an attempt is done with, for shutdown's wait.
    settled: Notify,
    /// Cancelled when shutdown begins: no claim starts after it.
    stopping: CancellationToken,
    /// Spawned attempts, so shutdown can wait for them.
    attempts: TaskTracker,
    /// What the running attempts have written, for the output writer.
    output: Arc<OutputBook>,
    /// The process's metrics.
    metrics: Arc<Metrics>,
}

/// Locks a mutex whose data stays consistent even if a holder panicked (every
/// change under these locks is a single insert, remove or push).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn in_flight(&self) -> MutexGuard<'_, HashMap<AttemptId, Running>> {
        lock(&self.in_flight)
    }

    /// Stops an attempt still running.
    fn stop(&self, attempt: AttemptId, reason: StopReason) {
        if let Some(running) = self.in_flight().get_mut(&attempt)
            && let Some(stop) = running.stop.take()
        {
            let _ = stop.send(reason);
        }
    }

    /// Stops every running attempt of a task (a cancellation names only the task).
    fn stop_task(&self, task_id: i64, reason: StopReason) {
        let attempts: Vec<AttemptId> = self
            .in_flight()
            .keys()
            .filter(|attempt| attempt.task_id == task_id)
            .copied()
            .collect();
        for attempt in attempts {
            self.stop(attempt, reason);
        }
    }

    /// Forgets attempts that are done with (their outcome is stored, or they
    /// were abandoned): their saved text so far can go too.
    fn forget(&self, attempts: impl IntoIterator<Item = AttemptId>) {
        let attempts: Vec<AttemptId> = attempts.into_iter().collect();
        {
            let mut in_flight = self.in_flight();
            for attempt in &attempts {
                in_flight.remove(attempt);
            }
        }
        self.output.settle(attempts);
        self.settled.notify_waiters();
        self.wake.notify_one();
    }

    /// Counts the attempts whose outcomes were stored: those of `outcomes`
    /// whose task is in `written`. Call before they are forgotten.
    fn count_stored(&self, outcomes: &[Outcome], written: &[i64]) {
        let written: HashSet<i64> = written.iter().copied().collect();
        let in_flight = self.in_flight();
        for outcome in outcomes.iter().filter(|o| written.contains(&o.task_id)) {
            let Some(running) = in_flight.get(&outcome.attempt_id()) else {
                continue;
            };
            let counted = match &outcome.verdict {
                Verdict::Succeeded(_) => AttemptOutcome::Succeeded,
                Verdict::Retry { .. } if running.last => AttemptOutcome::Failed,
                Verdict::Retry { .. } => AttemptOutcome::Retry,
                Verdict::Failed { .. } => AttemptOutcome::Failed,
                Verdict::Cancelled => AttemptOutcome::Cancelled,
            };
            self.metrics.attempt_ended(&running.model, counted);
        }
    }

    /// Counts an attempt ended FAILED because its outcome could not be stored.
    fn count_failed(&self, attempt: AttemptId) {
        if let Some(running) = self.in_flight().get(&attempt) {
            self.metrics
                .attempt_ended(&running.model, AttemptOutcome::Failed);
        }
    }

    /// A connection from the queue's pool (its waits are bounded by the
    /// connection timeout).
    async fn conn(&self) -> Result<DbConn, DbFailure> {
        self.pool
            .get()
            .await
            .map_err(|e| DbFailure::Unavailable(format!("no database connection: {e}")))
    }

    /// Runs a step on a connection, within `step_timeout`: a database that
    /// stops answering (a partition, where nothing errors) cannot hold it.
    async fn within<T>(
        &self,
        step: impl Future<Output = diesel::QueryResult<T>>,
    ) -> Result<T, DbFailure> {
        match tokio::time::timeout(self.step_timeout, step).await {
            Ok(done) => done.map_err(DbFailure::Statement),
            Err(_) => Err(DbFailure::Unavailable(format!(
                "the database did not answer within {:?}",
                self.step_timeout
            ))),
        }
    }
}

/// A running worker. Stop it with [`Worker::shutdown`].
pub struct Worker {
    shared: Arc<Shared>,
    /// Cancelled once the attempts are settled: stops the heartbeat, upkeep and listener.
    finished: CancellationToken,
    background: TaskTracker,
    claim_loop: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
    outcomes: mpsc::UnboundedSender<Outcome>,
}

impl Worker {
    /// Starts a worker with a listening connection of its own (see
    /// [`Worker::start_on`]); the listener stops with the worker.
    pub async fn start(
        database: &DatabaseArgs,
        router: Arc<ModelRouter>,
        config: WorkerConfig,
    ) -> anyhow::Result<Worker> {
        Worker::start_measured(database, router, config, Arc::new(Metrics::new())).await
    }

    /// Like [`Worker::start`], recording into `metrics` (the process's one
    /// registry): claims, attempts, provider calls, rescues, its pool and
    /// its slots.
    pub async fn start_measured(
        database: &DatabaseArgs,
        router: Arc<ModelRouter>,
        config: WorkerConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Worker> {
        let finished = CancellationToken::new();
        let listener = Listener::start(
            database.database_url.clone(),
            database.timeout(),
            vec![DUE_CHANNEL, CANCEL_CHANNEL],
            finished.clone(),
        )
        .await;
        Worker::start_with(database, router, config, &listener, finished, metrics).await
    }

    /// Starts a worker on the process's `listener` (which must listen on
    /// [`DUE_CHANNEL`] and [`CANCEL_CHANNEL`]): its own pool on `database`,
    /// its lease, heartbeat, upkeep, outcome writer and claim loop. The
    /// listener is already listening, so no notification sent after this
    /// returns is missed.
    pub async fn start_on(
        database: &DatabaseArgs,
        router: Arc<ModelRouter>,
        config: WorkerConfig,
        listener: &Listener,
    ) -> anyhow::Result<Worker> {
        let metrics = Arc::new(Metrics::new());
        Worker::start_on_measured(database, router, config, listener, metrics).await
    }

    /// Like [`Worker::start_on`], recording into `metrics` (see
    /// [`Worker::start_measured`]).
    pub async fn start_on_measured(
        database: &DatabaseArgs,
        router: Arc<ModelRouter>,
        config: WorkerConfig,
        listener: &Listener,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Worker> {
        let finished = CancellationToken::new();
        Worker::start_with(database, router, config, listener, finished, metrics).await
    }

    async fn start_with(
        database: &DatabaseArgs,
        router: Arc<ModelRouter>,
        config: WorkerConfig,
        listener: &Listener,
        finished: CancellationToken,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Worker> {
        let pool = db::build_queue_pool(database).context("cannot build the queue's pool")?;
        let slots = Arc::new(Semaphore::new(config.slots));
        metrics.watch_pool(PoolName::Queue, pool.clone());
        metrics.watch_slots(Arc::clone(&slots), config.slots);
        let changes = ChangePublisher::start(pool.clone());
        let id = worker_id();
        tracing::info!(worker = %id, slots = config.slots, lease = ?config.lease, "worker starting");
        let shared = Arc::new(Shared {
            id,
            pool,
            router,
            changes,
            slots,
            config,
            step_timeout: database.statement_timeout() + database.timeout(),
            in_flight: Mutex::new(HashMap::new()),
            orphans: Mutex::new(Vec::new()),
            stuck: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            settled: Notify::new(),
            stopping: CancellationToken::new(),
            attempts: TaskTracker::new(),
            output: Arc::new(OutputBook::default()),
            metrics,
        });

        // Take the lease first: claims are made only under a live lease.
        let leased = async {
            let mut conn = shared.conn().await?;
            shared
                .within(store::heartbeat(&mut conn, &shared.id, shared.config.lease))
                .await
        };
        if let Err(error) = leased.await {
            tracing::warn!(%error, "could not take the worker's lease yet; retrying with the heartbeat");
        }

        let background = TaskTracker::new();
        // The handlers outlive a stopped worker on a shared listener: they
        // hold it weakly.
        let woken = Arc::downgrade(&shared);
        listener.on(DUE_CHANNEL, move |_| {
            if let Some(shared) = woken.upgrade() {
                shared.wake.notify_one();
            }
        });
        let cancelled = Arc::downgrade(&shared);
        listener.on(CANCEL_CHANNEL, move |heard| {
            let Some(shared) = cancelled.upgrade() else {
                return;
            };
            match heard {
                Heard::Payload(id) => {
                    if let Ok(task_id) = id.parse() {
                        shared.stop_task(task_id, StopReason::Cancel);
                    }
                }
                // Missed cancellations come with the next heartbeat's answer.
                Heard::Reconnected => shared.wake.notify_one(),
            }
        });
        background.spawn(output_writer::run(
            Arc::clone(&shared.output),
            WriterConfig {
                database_url: database.database_url.clone(),
                worker_id: shared.id.clone(),
                connect_timeout: database.timeout(),
                statement_timeout: database.statement_timeout(),
            },
            finished.clone(),
        ));
        background.spawn(leases::keep(Arc::clone(&shared), finished.clone()));
        background.spawn(upkeep::run(Arc::clone(&shared), finished.clone()));

        let (outcomes, received) = mpsc::unbounded_channel();
        let writer = tokio::spawn(outcome_writer::run(Arc::clone(&shared), received));
        let claim_loop = tokio::spawn(claim_loop::run(Arc::clone(&shared), outcomes.clone()));
        Ok(Worker {
            shared,
            finished,
            background,
            claim_loop,
            writer,
            outcomes,
        })
    }

    /// This worker's id, as recorded in the tasks it holds.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// A token that, once cancelled, stops the worker from claiming (the first
    /// step of [`Worker::shutdown`], for a caller that wants it at once).
    pub fn stop_claiming(&self) -> CancellationToken {
        self.shared.stopping.clone()
    }

    /// Stops claiming, lets running tasks finish within the grace period, then
    /// hands the rest back to the queue for another worker at once. Takes at
    /// most the grace period plus [`SHUTDOWN_FLUSH`] and a moment, whether or
    /// not the database answers.
    pub async fn shutdown(self) {
        let Worker {
            shared,
            finished,
            background,
            claim_loop,
            mut writer,
            outcomes,
        } = self;
        shared.stopping.cancel();
        let grace = shared.config.shutdown_grace;
        let deadline = Instant::now() + grace;
        // The claim loop ends at its next step; a claim in flight is bounded.
        let _ = tokio::time::timeout(grace, claim_loop).await;
        let running = shared.in_flight().len();
        tracing::info!(worker = %shared.id, running, ?grace, "worker stopping");

        let settled = tokio::time::timeout_at(deadline.into(), async {
            loop {
                let settled = shared.settled.notified();
                if shared.in_flight().is_empty() {
                    break;
                }
                settled.await;
            }
        })
        .await;

        let flush = async {
            if settled.is_err() {
                hand_back(&shared).await;
            }
            // Let the writer store what finished.
            drop(outcomes);
            let _ = (&mut writer).await;
            let unregistered = async {
                let mut conn = shared.conn().await?;
                shared
                    .within(store::unregister(&mut conn, &shared.id))
                    .await
            };
            if let Err(error) = unregistered.await {
                tracing::warn!(%error, "could not remove the worker's lease; it lapses by itself");
            }
            shared.changes.flush(SHUTDOWN_FLUSH).await;
        };
        if tokio::time::timeout(SHUTDOWN_FLUSH, flush).await.is_err() {
            tracing::error!(worker = %shared.id, "the database did not answer in time; unfinished tasks return to the queue when this worker's lease lapses");
        }
        writer.abort();
        shared.attempts.close();
        finished.cancel();
        background.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), background.wait()).await;
        tracing::info!(worker = %shared.id, "worker stopped");
    }
}

/// Stops the attempts still running after the grace period and hands their
/// tasks back to the queue at once, the interrupted attempt uncounted.
async fn hand_back(shared: &Shared) {
    let unfinished: Vec<AttemptId> = shared
        .in_flight()
        .iter()
        .filter(|(_, running)| !running.finished)
        .map(|(attempt, _)| *attempt)
        .collect();
    for attempt in &unfinished {
        shared.stop(*attempt, StopReason::Shutdown);
    }
    let released = async {
        let mut conn = shared.conn().await?;
        shared
            .within(store::release(&mut conn, &shared.id, &unfinished))
            .await
    };
    match released.await {
        Ok(released) => {
            tracing::info!(
                released = released.len(),
                "handed unfinished tasks back to the queue"
            );
            shared.changes.publish_all(TaskEventType::Updated, released);
        }
        Err(error) => {
            tracing::error!(%error, "could not hand tasks back; they return when the lease lapses")
        }
    }
    shared.forget(unfinished);
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
