//! Lease keeping: every third of the lease, renew the worker's lease and
//! compare what the database says the worker holds with what it runs.
//!
//! - An attempt the worker runs but the database no longer counts as its own
//!   was rescued from it (its lease lapsed): abandon it, write nothing.
//! - A held task whose cancellation was asked for is stopped (in case the
//!   notification was missed).
//! - A task the database counts as the worker's but that it does not run is
//!   an orphan (a claim whose answer was lost): the claim loop adopts it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::queue::outcome::AttemptId;
use crate::queue::store::{self, LeaseState};
use crate::queue::worker::{Shared, StopReason, lock};

/// Runs until `finished` is cancelled (after shutdown's last attempt settled).
pub(super) async fn keep(shared: Arc<Shared>, finished: CancellationToken) {
    let period = shared.config.lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = finished.cancelled() => return,
        }
        let asked_at = Instant::now();
        let renewed = async {
            let mut conn = shared.conn().await?;
            shared
                .within(store::heartbeat(&mut conn, &shared.id, shared.config.lease))
                .await
        };
        match renewed.await {
            Ok(held) => reconcile(&shared, &held, asked_at),
            Err(error) => tracing::warn!(%error, "could not renew the worker's lease"),
        }
    }
}

/// Acts on what a heartbeat that was sent at `asked_at` learned.
fn reconcile(shared: &Shared, held: &[LeaseState], asked_at: Instant) {
    let held: HashMap<AttemptId, bool> = held
        .iter()
        .map(|state| (state.attempt_id(), state.cancel_requested))
        .collect();
    let (lost, cancelled, orphans) = {
        let in_flight = shared.in_flight();
        // Only attempts claimed before the heartbeat asked can be missing
        // from its answer for a reason.
        let lost: Vec<AttemptId> = in_flight
            .iter()
            .filter(|(attempt, running)| {
                !running.finished && running.since < asked_at && !held.contains_key(attempt)
            })
            .map(|(attempt, _)| *attempt)
            .collect();
        let cancelled: Vec<AttemptId> = held
            .iter()
            .filter(|(attempt, cancel)| **cancel && in_flight.contains_key(attempt))
            .map(|(attempt, _)| *attempt)
            .collect();
        let orphans: Vec<AttemptId> = held
            .keys()
            .filter(|attempt| !in_flight.contains_key(attempt))
            .copied()
            .collect();
        (lost, cancelled, orphans)
    };
    for attempt in lost {
        tracing::warn!(
            task = attempt.task_id,
            attempt = attempt.attempt,
            "this worker's lease on the task lapsed and it was handed to another; abandoning the attempt"
        );
        shared.stop(attempt, StopReason::LeaseLost);
    }
    for attempt in cancelled {
        shared.stop(attempt, StopReason::Cancel);
    }
    if !orphans.is_empty() {
        let mut known = lock(&shared.orphans);
        for orphan in orphans {
            if !known.contains(&orphan) {
                known.push(orphan);
            }
        }
        drop(known);
        shared.wake.notify_one();
    }
}
