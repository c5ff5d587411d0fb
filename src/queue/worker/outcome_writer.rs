//! The outcome writer: stores whatever attempts finished while the last batch
//! was being written, in one fenced statement. Outcomes are kept until stored
//! (the lease is renewed meanwhile); a row the database refuses is found and
//! ended FAILED with the reason, so one row never holds up the rest.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::AsyncPgConnection;
use tokio::sync::mpsc;

use crate::events::TaskEventType;
use crate::queue::outcome::Outcome;
use crate::queue::store::{self, Splitter};
use crate::queue::worker::{DbFailure, Shared, lock};

/// Most outcomes in one statement.
const BATCH: usize = 1024;

/// Runs until every sender is gone and the last batch is stored.
pub(super) async fn run(shared: Arc<Shared>, mut received: mpsc::UnboundedReceiver<Outcome>) {
    let mut batch = Vec::with_capacity(BATCH);
    while received.recv_many(&mut batch, BATCH).await > 0 {
        let outcomes = std::mem::take(&mut batch);
        let mut delays =
            crate::db::retry_delays(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match write(&shared, &outcomes).await {
                Ok(()) => break,
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(5));
                    tracing::warn!(%error, pending = outcomes.len(), retry_in = ?delay, "could not record outcomes");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        shared.forget(outcomes.iter().map(Outcome::attempt_id));
    }
}

/// Writes one batch; a batch the database refuses for a reason that is not
/// transient is split until the outcomes at fault stand alone.
async fn write(shared: &Shared, outcomes: &[Outcome]) -> Result<(), DbFailure> {
    let mut conn = shared.conn().await?;
    let written = shared
        .within(store::record_outcomes(&mut conn, &shared.id, outcomes))
        .await;
    let written = match written {
        Ok(written) => written,
        Err(failure) if failure.worth_splitting() => {
            tracing::warn!(error = %failure, "recording outcomes failed; recording one by one to find the row at fault");
            return write_isolating(shared, &mut conn, outcomes).await;
        }
        Err(failure) => return Err(failure),
    };
    shared.count_stored(outcomes, &written);
    shared
        .changes
        .publish_all(TaskEventType::Updated, written.iter().copied());
    if written.len() < outcomes.len() {
        let skipped: Vec<i64> = outcomes
            .iter()
            .map(|outcome| outcome.task_id)
            .filter(|id| !written.contains(id))
            .collect();
        tracing::warn!(tasks = ?skipped, "outcomes not recorded: these tasks are no longer this worker's (lease lost)");
    }
    Ok(())
}

async fn write_isolating(
    shared: &Shared,
    conn: &mut AsyncPgConnection,
    outcomes: &[Outcome],
) -> Result<(), DbFailure> {
    let mut splitter = Splitter::new(outcomes);
    while let Some(part) = splitter.next_part() {
        match shared
            .within(store::record_outcomes(conn, &shared.id, part))
            .await
        {
            Ok(written) => {
                shared.count_stored(part, &written);
                shared.changes.publish_all(TaskEventType::Updated, written);
            }
            Err(DbFailure::Statement(error)) => {
                splitter.failed(part, error).map_err(DbFailure::Statement)?
            }
            Err(failure) => return Err(failure),
        }
    }
    for (outcome, error) in std::mem::take(&mut splitter.alone) {
        let attempt = outcome.attempt_id();
        let reason = format!(
            "the outcome could not be stored: {}",
            store::describe(&error)
        );
        match shared
            .within(store::fail_unrecordable(conn, &shared.id, attempt, &reason))
            .await
        {
            Ok(ended) => {
                if ended {
                    shared.count_failed(attempt);
                    shared
                        .changes
                        .publish(TaskEventType::Updated, attempt.task_id);
                }
                tracing::warn!(task = attempt.task_id, %reason, "ended FAILED a task whose outcome cannot be stored")
            }
            Err(error) => {
                tracing::error!(task = attempt.task_id, %reason, %error,
                    "a task can be neither recorded nor ended; it stays RUNNING until an operator fixes its row");
                lock(&shared.stuck).insert(attempt);
            }
        }
    }
    Ok(())
}
