//! The label values the metrics may carry. Every one comes from a small fixed
//! set or from configuration, except model names, which clients choose:
//! those are capped (see [`ModelLabels`]). No label ever carries a prompt, an
//! id or an error message.

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

use prometheus_client::encoding::EncodeLabelSet;

use crate::providers::FailureKind;
use crate::tasks::TaskStatus;

/// The most model names that get a label value of their own in one process;
/// later names are counted as [`OTHER_MODEL`].
pub const MAX_MODEL_LABELS: usize = 100;

/// The label value of every model name past the first [`MAX_MODEL_LABELS`].
pub const OTHER_MODEL: &str = "other";

/// Model names as label values, capped: the first [`MAX_MODEL_LABELS`]
/// distinct names this process sees keep their own value, later ones share
/// [`OTHER_MODEL`]. A provider may route every name with a prefix, so the
/// names clients may use are an open set; the cap keeps the series bounded.
#[derive(Debug, Default)]
pub struct ModelLabels {
    admitted: RwLock<HashSet<String>>,
}

impl ModelLabels {
    /// The label value for `model`.
    pub fn label(&self, model: &str) -> String {
        {
            let admitted = self.admitted.read().unwrap_or_else(PoisonError::into_inner);
            if admitted.contains(model) {
                return model.to_owned();
            }
            if admitted.len() >= MAX_MODEL_LABELS {
                return OTHER_MODEL.to_owned();
            }
        }
        let mut admitted = self
            .admitted
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if admitted.contains(model) || admitted.len() < MAX_MODEL_LABELS {
            admitted.insert(model.to_owned());
            model.to_owned()
        } else {
            OTHER_MODEL.to_owned()
        }
    }
}

/// How one attempt ended, as `taskrunner_task_attempts_total` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The model answered and the answer was stored.
    Succeeded,
    /// It failed and the task will be tried again.
    Retry,
    /// It failed for good (a permanent error, or its attempts are spent).
    Failed,
    /// A cancellation stopped it.
    Cancelled,
    /// Its worker was lost (killed, crashed, cut off); counted by the process
    /// whose rescuer handed the task back or ended it.
    Lost,
}

impl AttemptOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Cancelled => "cancelled",
            AttemptOutcome::Lost => "lost",
        }
    }
}

/// How one call to a provider ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderOutcome {
    /// It answered.
    Ok,
    /// It failed, in one of a few kinds.
    Failed(FailureKind),
    /// The call was dropped before it ended (a cancellation, a lost lease,
    /// shutdown).
    Cancelled,
}

impl ProviderOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderOutcome::Ok => "ok",
            ProviderOutcome::Failed(FailureKind::Timeout) => "timeout",
            ProviderOutcome::Failed(FailureKind::RateLimited) => "rate_limited",
            ProviderOutcome::Failed(FailureKind::ServerError) => "server_error",
            ProviderOutcome::Failed(FailureKind::ClientError) => "client_error",
            ProviderOutcome::Failed(FailureKind::Connection) => "connection",
            ProviderOutcome::Failed(FailureKind::InvalidResponse) => "invalid_response",
            ProviderOutcome::Cancelled => "cancelled",
        }
    }
}

/// The kind of a GraphQL operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationType {
    Query,
    Mutation,
    Subscription,
    /// The request failed before its operation was known (it did not parse,
    /// or named no operation it holds).
    Unknown,
}

impl OperationType {
    /// Every kind, for series made up front.
    pub const ALL: [OperationType; 4] = [
        OperationType::Query,
        OperationType::Mutation,
        OperationType::Subscription,
        OperationType::Unknown,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
            OperationType::Unknown => "unknown",
        }
    }
}

/// A database pool, by its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolName {
    /// The API's pool (requests, the event hub).
    Api,
    /// The queue's pool (claims, heartbeats, outcomes, rescues).
    Queue,
}

impl PoolName {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolName::Api => "api",
            PoolName::Queue => "queue",
        }
    }
}

/// A task status as a label value.
pub fn status_label(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "pending",
        TaskStatus::Running => "running",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Cancelled => "cancelled",
    }
}

/// `{model}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModelSeries {
    pub model: String,
}

/// `{model, outcome}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AttemptSeries {
    pub model: String,
    pub outcome: &'static str,
}

/// `{model, kind}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TokenSeries {
    pub model: String,
    pub kind: &'static str,
}

/// `{provider, outcome}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProviderSeries {
    pub provider: String,
    pub outcome: &'static str,
}

/// `{provider}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ProviderNameSeries {
    pub provider: String,
}

/// `{operation_type, outcome}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct GraphqlSeries {
    pub operation_type: &'static str,
    pub outcome: &'static str,
}

/// `{operation_type}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OperationSeries {
    pub operation_type: &'static str,
}

/// `{status}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StatusSeries {
    pub status: &'static str,
}

/// `{state}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateSeries {
    pub state: &'static str,
}

/// `{pool, state}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PoolSeries {
    pub pool: &'static str,
    pub state: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_capped() {
        let labels = ModelLabels::default();
        for n in 0..MAX_MODEL_LABELS {
            assert_eq!(labels.label(&format!("m{n}")), format!("m{n}"));
        }
        assert_eq!(labels.label("one-too-many"), OTHER_MODEL);
        // Names admitted before the cap keep their value.
        assert_eq!(labels.label("m7"), "m7");
    }
}
