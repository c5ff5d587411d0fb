//! Upkeep, in every worker process: fold the status counters every second;
//! every half lease, rescue the tasks of lost workers, end pending tasks with
//! no attempts left, and forget long-dead workers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel_async::AsyncPgConnection;
use tokio_util::sync::CancellationToken;

use crate::events::TaskEventType;
use crate::metrics::AttemptOutcome;
use crate::queue::store::{self, Splitter};
use crate::queue::worker::{DbFailure, Shared};

/// How often the status counters are folded.
const FOLD_PERIOD: Duration = Duration::from_secs(1);
/// Most tasks one rescue hands back.
const RESCUE_BATCH: i64 = 1000;
/// The most rows one worker remembers as impossible to rescue (each is logged).
const MAX_UNRESCUABLE: usize = 10_000;
/// How long a deleted task's last state is kept for subscribers.
const FORGET_TOMBSTONES_AFTER: Duration = Duration::from_secs(5 * 60);
/// How long a dead worker's row is kept after its lease lapsed.
const FORGET_WORKERS_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Runs until `finished` is cancelled.
pub(super) async fn run(shared: Arc<Shared>, finished: CancellationToken) {
    let rescue_period = shared.config.lease / 2;
    let mut next_rescue = Instant::now() + rescue_period;
    let mut unrescuable: Vec<i64> = Vec::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(FOLD_PERIOD.min(rescue_period)) => {}
            () = finished.cancelled() => return,
        }
        let mut conn = match shared.conn().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "cannot keep the queue tidy now");
                continue;
            }
        };
        if let Err(error) = shared.within(store::fold_status_counts(&mut conn)).await {
            tracing::warn!(%error, "could not fold the status counters");
        }
        if Instant::now() < next_rescue {
            continue;
        }
        next_rescue = Instant::now() + rescue_period;
        rescue(&shared, &mut conn, &mut unrescuable).await;
        match shared.within(store::sweep_exhausted(&mut conn)).await {
            Ok(ended) if ended.is_empty() => {}
            Ok(ended) => {
                tracing::warn!(
                    ended = ended.len(),
                    "ended FAILED pending tasks that had no attempts left"
                );
                shared.changes.publish_all(TaskEventType::Updated, ended);
            }
            Err(error) => tracing::warn!(%error, "could not sweep exhausted tasks"),
        }
        if let Err(error) = shared
            .within(store::forget_dead_workers(&mut conn, FORGET_WORKERS_AFTER))
            .await
        {
            tracing::warn!(%error, "could not forget dead workers");
        }
        if let Err(error) = shared
            .within(store::forget_tombstones(&mut conn, FORGET_TOMBSTONES_AFTER))
            .await
        {
            tracing::warn!(%error, "could not forget deleted tasks");
        }
    }
}

/// Hands the tasks of lost workers back to the queue (or ends them). A row
/// that breaks the statement is found and set aside, never retried forever.
async fn rescue(shared: &Shared, conn: &mut AsyncPgConnection, unrescuable: &mut Vec<i64>) {
    let backoff = shared.config.backoff;
    let rescued = match shared
        .within(store::rescue_lost(
            conn,
            RESCUE_BATCH,
            unrescuable,
            &backoff,
        ))
        .await
    {
        Ok(rescued) => rescued,
        Err(failure) if failure.worth_splitting() => {
            tracing::warn!(error = %failure, "a rescue failed; rescuing one by one to find the row at fault");
            match rescue_isolating(shared, conn, unrescuable).await {
                Ok(rescued) => rescued,
                Err(failure) => return warn_failed(&failure),
            }
        }
        Err(failure) => return warn_failed(&failure),
    };
    for task in &rescued {
        let model = shared.metrics.model_label(&task.model);
        shared.metrics.attempt_ended(&model, AttemptOutcome::Lost);
    }
    if !rescued.is_empty() {
        shared
            .changes
            .publish_all(TaskEventType::Updated, rescued.iter().map(|task| task.id));
        tracing::warn!(
            rescued = rescued.len(),
            "handed the tasks of lost workers back to the queue"
        );
        shared.wake.notify_one();
    }
}

async fn rescue_isolating(
    shared: &Shared,
    conn: &mut AsyncPgConnection,
    unrescuable: &mut Vec<i64>,
) -> Result<Vec<store::RescuedTask>, DbFailure> {
    let backoff = shared.config.backoff;
    let lost = shared
        .within(store::lost_tasks(conn, RESCUE_BATCH, unrescuable))
        .await?;
    let mut rescued = Vec::new();
    let mut splitter = Splitter::new(&lost);
    while let Some(ids) = splitter.next_part() {
        match shared.within(store::rescue_ids(conn, ids, &backoff)).await {
            Ok(done) => rescued.extend(done),
            Err(DbFailure::Statement(error)) => {
                splitter.failed(ids, error).map_err(DbFailure::Statement)?
            }
            Err(failure) => return Err(failure),
        }
    }
    for (id, error) in splitter.alone {
        tracing::error!(task = id, error = %store::describe(&error),
            "a lost task cannot be rescued; it stays RUNNING until an operator fixes its row");
        if unrescuable.len() < MAX_UNRESCUABLE {
            unrescuable.push(id);
        }
    }
    Ok(rescued)
}

fn warn_failed(failure: &DbFailure) {
    tracing::warn!(error = %failure, "could not rescue the tasks of lost workers");
}
