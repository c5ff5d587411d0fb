//! What came of one attempt, and how long a retry waits.

use std::time::Duration;

use rand::Rng;

use crate::providers::scrub::public_text;
use crate::providers::{Completion, ProviderError};

/// One attempt at one task. A task can be attempted again, even by the same
/// worker (after a rescue, or a retry), so whatever is kept about an attempt
/// is keyed by both: an old attempt's clean-up can never touch a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId {
    pub task_id: i64,
    /// The attempt's number: the task's `attempts` once it was claimed.
    pub attempt: i32,
}

/// The outcome of one attempt at one task.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub task_id: i64,
    /// The attempt number it belongs to (the fence: see `store::record_outcomes`).
    pub attempt: i32,
    pub verdict: Verdict,
}

impl Outcome {
    /// The attempt this is the outcome of.
    pub fn attempt_id(&self) -> AttemptId {
        AttemptId {
            task_id: self.task_id,
            attempt: self.attempt,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The model answered.
    Succeeded(Completion),
    /// It failed in a way that may pass; try again after `delay` (the task
    /// ends FAILED instead if its attempts are spent).
    Retry { error: String, delay: Duration },
    /// It failed in a way that will not pass.
    Failed { error: String },
    /// Cancellation was asked for and the attempt was stopped.
    Cancelled,
}

impl Verdict {
    /// The verdict for a provider's error on attempt number `attempt`; the
    /// error it records is the message without URLs or addresses (see
    /// `providers::scrub`).
    pub fn from_provider_error(error: ProviderError, attempt: i32, backoff: &Backoff) -> Self {
        match error {
            ProviderError::Permanent { message, .. } => Verdict::Failed {
                error: public_text(&message),
            },
            ProviderError::Retryable {
                message,
                retry_after,
                ..
            } => Verdict::Retry {
                error: public_text(&message),
                delay: backoff.delay(attempt, retry_after),
            },
        }
    }
}

/// Exponential backoff with "equal jitter" (a random delay between half and
/// all of the exponential ceiling, so every retry keeps a floor), never sooner
/// than a provider's Retry-After, and never longer than `max` (which caps a
/// Retry-After too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The most any retry waits (Retry-After included).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay before retrying after attempt number `attempt` (1-based):
    /// a random delay up to `base · 2^(attempt-1)`, at least `retry_after`,
    /// at most `max`.
    pub fn delay(&self, attempt: i32, retry_after: Option<Duration>) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(20);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.max);
        let jittered = ceiling.mul_f64(rand::rng().random_range(0.5..=1.0));
        jittered.max(retry_after.unwrap_or_default()).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let backoff = Backoff::default();
        for attempt in 1..=30 {
            let delay = backoff.delay(attempt, None);
            let ceiling = Duration::from_secs(1 << (attempt - 1).min(20)).min(backoff.max);
            assert!(
                delay <= ceiling && delay >= ceiling / 2,
                "attempt {attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_maximum() {
        let backoff = Backoff::default();
        assert_eq!(
            backoff.delay(1, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            backoff.delay(1, Some(Duration::from_secs(86_400))),
            backoff.max
        );
    }
}
