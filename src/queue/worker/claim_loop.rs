//! The claim loop: takes as many due tasks as there are free slots whenever
//! woken (a notification, a freed slot, the next delayed task falling due,
//! orphans found, or the polling interval), and starts an attempt for each.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use tokio::sync::mpsc;

use crate::events::TaskEventType;
use crate::queue::outcome::{AttemptId, Outcome};
use crate::queue::store::{self, Splitter};
use crate::queue::worker::{DbFailure, Shared, attempt, lock};
use crate::tasks::Task;

/// The most rows one worker remembers as impossible to start (each is logged).
const MAX_UNSTARTABLE: usize = 10_000;
/// The shortest sleep before the next delayed task falls due.
const MIN_SLEEP: Duration = Duration::from_millis(5);

/// How long to wait between claims that keep failing: growing from 100 ms to
/// 5 s, with jitter so that workers cut off together do not return together.
fn retry_delays() -> impl Iterator<Item = Duration> {
    crate::db::retry_delays(Duration::from_millis(100), Duration::from_secs(5))
}

/// Runs until shutdown begins.
pub(super) async fn run(shared: Arc<Shared>, outcomes: mpsc::UnboundedSender<Outcome>) {
    let config = &shared.config;
    let mut failing: Option<Box<dyn Iterator<Item = Duration> + Send>> = None;
    // Rows this worker found it can neither start nor end (see `claim_isolating`).
    let mut unstartable: Vec<i64> = Vec::new();
    while !shared.stopping.is_cancelled() {
        adopt_orphans(&shared, &outcomes).await;
        let mut sleep_for = config.poll_interval;
        loop {
            if shared.stopping.is_cancelled() {
                return;
            }
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
            match claim(&shared, free, &mut unstartable).await {
                Ok(tasks) => {
                    failing = None;
                    let drained = tasks.len() < free;
                    for task in tasks {
                        let Ok(permit) = Arc::clone(&shared.slots).try_acquire_owned() else {
                            break; // cannot happen: only this loop takes slots
                        };
                        attempt::start(&shared, task, permit, outcomes.clone());
                    }
                    if drained {
                        // Asked once the claimed tasks have started: it is
                        // only a hint for the next sleep.
                        if let Some(next_due) = next_due(&shared, &unstartable).await {
                            sleep_for = sleep_for.min(next_due.max(MIN_SLEEP));
                        }
                        break;
                    }
                }
                Err(error) => {
                    let delays = failing.get_or_insert_with(|| Box::new(retry_delays()));
                    sleep_for = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, retry_in = ?sleep_for, "could not claim tasks");
                    break;
                }
            }
        }
        if failing.is_some() {
            // Keep the backoff: wake-ups would only repeat the failure sooner.
            tokio::select! {
                () = tokio::time::sleep(sleep_for) => {}
                () = shared.stopping.cancelled() => {}
            }
        } else {
            tokio::select! {
                () = shared.wake.notified() => {}
                () = tokio::time::sleep(sleep_for) => {}
                () = shared.stopping.cancelled() => {}
            }
        }
    }
}

/// Claims up to `free` tasks. If the claim fails for a reason that is not
/// transient, a row is to blame: claims one by one to find it.
async fn claim(
    shared: &Shared,
    free: usize,
    unstartable: &mut Vec<i64>,
) -> Result<Vec<Task>, DbFailure> {
    let limit = i64::try_from(free).unwrap_or(i64::MAX);
    let mut conn = shared.conn().await?;
    let claimed = shared
        .within(store::claim_batch(
            &mut conn,
            &shared.id,
            limit,
            unstartable,
        ))
        .await;
    let claimed = match claimed {
        Ok(tasks) => Ok(tasks),
        Err(failure) if failure.worth_splitting() => {
            tracing::warn!(error = %failure, "a claim failed; claiming one by one to find the row at fault");
            claim_isolating(shared, &mut conn, limit, unstartable).await
        }
        Err(failure) => Err(failure),
    };
    if let Ok(tasks) = &claimed {
        shared
            .changes
            .publish_all(TaskEventType::Updated, tasks.iter().map(|task| task.id));
    }
    claimed
}

/// How long until the next claimable task falls due, if any is pending and
/// the database says so in time.
async fn next_due(shared: &Shared, unstartable: &[i64]) -> Option<Duration> {
    let mut conn = shared.conn().await.ok()?;
    let seconds = shared
        .within(store::next_due_in(&mut conn, unstartable))
        .await
        .ok()??;
    Some(Duration::try_from_secs_f64(seconds.max(0.0)).unwrap_or(Duration::MAX))
}

/// The claim of the tasks a batch claim would take, split until the rows that
/// break it stand alone. Each such row is ended FAILED with the database's
/// reason; one that cannot even be ended is remembered and skipped.
async fn claim_isolating(
    shared: &Shared,
    conn: &mut AsyncPgConnection,
    limit: i64,
    unstartable: &mut Vec<i64>,
) -> Result<Vec<Task>, DbFailure> {
    let candidates = shared
        .within(store::claim_candidates(conn, limit, unstartable))
        .await?;
    let mut tasks = Vec::new();
    let mut splitter = Splitter::new(&candidates);
    while let Some(ids) = splitter.next_part() {
        match shared.within(store::claim_ids(conn, &shared.id, ids)).await {
            Ok(claimed) => tasks.extend(claimed),
            Err(DbFailure::Statement(error)) => {
                splitter.failed(ids, error).map_err(DbFailure::Statement)?
            }
            Err(failure) => return Err(failure),
        }
    }
    for (id, error) in std::mem::take(&mut splitter.alone) {
        let reason = format!(
            "the database refused to start it: {}",
            store::describe(&error)
        );
        match shared
            .within(store::fail_unstartable(conn, id, &reason))
            .await
        {
            Ok(ended) => {
                if ended {
                    shared.changes.publish(TaskEventType::Updated, id);
                }
                tracing::warn!(task = id, %reason, "ended FAILED a task that cannot be started")
            }
            Err(error) => {
                tracing::error!(task = id, %reason, %error,
                    "a task can be neither started nor ended; this worker skips it");
                if unstartable.len() < MAX_UNSTARTABLE {
                    unstartable.push(id);
                }
            }
        }
    }
    Ok(tasks)
}

/// Starts the attempts the database says this worker holds but that it is
/// not running (a claim that committed, but whose answer never arrived, or
/// could not be read).
async fn adopt_orphans(shared: &Arc<Shared>, outcomes: &mpsc::UnboundedSender<Outcome>) {
    let orphans: Vec<AttemptId> = std::mem::take(&mut *lock(&shared.orphans));
    for (n, orphan) in orphans.iter().enumerate() {
        if shared.in_flight().contains_key(orphan) || lock(&shared.stuck).contains(orphan) {
            continue;
        }
        let adopted = async {
            let mut conn = shared.conn().await?;
            let task = shared
                .within(store::adopt(&mut conn, &shared.id, *orphan))
                .await;
            if let Err(failure) = &task
                && failure.blames_rows()
            {
                let reason = format!("the task could not be read: {failure}");
                let ended = shared
                    .within(store::fail_unrecordable(
                        &mut conn, &shared.id, *orphan, &reason,
                    ))
                    .await;
                if let Err(error) = ended {
                    tracing::error!(task = orphan.task_id, %reason, %error, "a task can be neither read nor ended");
                    lock(&shared.stuck).insert(*orphan);
                }
                return Ok(None);
            }
            task
        };
        match adopted.await {
            Ok(None) => {} // finished or handed back meanwhile, or set aside
            Ok(Some(task)) => match Arc::clone(&shared.slots).try_acquire_owned() {
                Ok(permit) => {
                    tracing::info!(
                        task = orphan.task_id,
                        attempt = orphan.attempt,
                        "starting a task this worker claimed but never started"
                    );
                    attempt::start(shared, task, permit, outcomes.clone());
                }
                Err(_) => hand_back(shared, *orphan).await,
            },
            Err(_) => {
                // The database is away: try these again after the next heartbeat.
                lock(&shared.orphans).extend(orphans[n..].iter().copied());
                return;
            }
        }
    }
}

/// Hands a claimed attempt back to the queue uncounted.
async fn hand_back(shared: &Shared, attempt: AttemptId) {
    let released = async {
        let mut conn = shared.conn().await?;
        shared
            .within(store::release(&mut conn, &shared.id, &[attempt]))
            .await
    };
    match released.await {
        Ok(released) => shared.changes.publish_all(TaskEventType::Updated, released),
        Err(error) => {
            tracing::warn!(task = attempt.task_id, %error, "could not hand a task back; it returns when the lease lapses")
        }
    }
}
