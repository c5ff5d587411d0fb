//! One attempt at one task: call the task's provider within the attempt's
//! timeout, with no database connection held, write its answer's text into
//! the output book as it comes, and hand the verdict to the outcome writer. Stoppable from outside (a cancellation, a lost lease,
//! shutdown), and a panic fails the attempt, never the worker.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tracing::Instrument;

use crate::providers::CompletionRequest;
use crate::queue::outcome::{AttemptId, Backoff, Outcome, Verdict};
use crate::queue::worker::{Running, Shared, StopReason};
use crate::tasks::Task;

/// Runs the attempt a claim just made, in its own task, holding `permit`
/// (its slot) until the attempt ends.
pub(super) fn start(
    shared: &Arc<Shared>,
    task: Task,
    permit: OwnedSemaphorePermit,
    outcomes: mpsc::UnboundedSender<Outcome>,
) {
    let attempt = AttemptId {
        task_id: task.id,
        attempt: task.attempts,
    };
    let (stop, stopped) = oneshot::channel();
    let model = shared.metrics.model_label(&task.model);
    // Due to claimed, both by the database's clock.
    if let Some(started_at) = task.started_at {
        let waited = (started_at - task.run_at).to_std().unwrap_or_default();
        shared.metrics.task_claimed(&model, waited);
    }
    shared.output.begin(attempt);
    shared.in_flight().insert(
        attempt,
        Running {
            stop: Some(stop),
            since: Instant::now(),
            finished: false,
            model: model.clone(),
            last: task.attempts >= task.max_attempts,
        },
    );
    let shared = Arc::clone(shared);
    let tracker = shared.attempts.clone();
    tracker.spawn(async move {
        let began = Instant::now();
        // Whatever the provider code logs carries the task and attempt.
        let span = tracing::info_span!(
            "attempt",
            task.id = attempt.task_id,
            attempt = attempt.attempt
        );
        let run = guard_panics(
            attempt.attempt,
            shared.config.backoff,
            call(&shared, attempt, task).instrument(span),
        );
        let verdict = tokio::select! {
            verdict = run => Some(verdict),
            reason = stopped => match reason {
                Ok(StopReason::Cancel) => Some(Verdict::Cancelled),
                Ok(StopReason::LeaseLost | StopReason::Shutdown) | Err(_) => None,
            },
        };
        // The slot is free as soon as the attempt is: the next claim overlaps
        // with writing this outcome.
        drop(permit);
        shared.output.end(attempt);
        if let Some(verdict) = &verdict {
            let tokens = match verdict {
                Verdict::Succeeded(answer) => (answer.prompt_tokens, answer.completion_tokens),
                _ => (None, None),
            };
            shared.metrics.attempt_ran(&model, began.elapsed(), tokens);
        }
        match verdict {
            Some(verdict) => {
                if let Some(running) = shared.in_flight().get_mut(&attempt) {
                    running.finished = true;
                }
                let outcome = Outcome {
                    task_id: attempt.task_id,
                    attempt: attempt.attempt,
                    verdict,
                };
                if outcomes.send(outcome).is_err() {
                    shared.forget([attempt]);
                }
            }
            None => shared.forget([attempt]),
        }
        shared.wake.notify_one();
    });
}

/// Calls the task's provider, within the attempt's timeout (the task's own,
/// else its provider's, else the deployment's default), writing the answer's
/// text into the output book as it comes.
async fn call(shared: &Shared, attempt: AttemptId, task: Task) -> Verdict {
    let backoff = &shared.config.backoff;
    let entry = match shared.router.route(&task.model) {
        Ok(entry) => entry,
        // No provider: fails; a provider that refused to list: may pass.
        Err(unroutable) => {
            return Verdict::from_provider_error(unroutable.into(), task.attempts, backoff);
        }
    };
    let timeout = entry.attempt_timeout(task.timeout_seconds, shared.config.default_timeout);
    let request = CompletionRequest {
        model: task.model,
        prompt: task.prompt,
        system: task.system_prompt,
        temperature: task.temperature,
        max_tokens: task.max_tokens,
    };
    let output = &shared.output;
    let mut on_text = |text: &str| output.write(attempt, text);
    let called = entry
        .stream_measured(&request, timeout, &mut on_text, &shared.metrics)
        .await;
    match called {
        Ok(completion) => Verdict::Succeeded(completion),
        Err(error) => {
            // The whole message, for the operator; the task's owner reads
            // it without addresses (`Verdict::from_provider_error`).
            tracing::warn!(kind = ?error.kind(), error = %error.message(), "the attempt failed");
            Verdict::from_provider_error(error, task.attempts, backoff)
        }
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
