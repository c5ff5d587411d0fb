//! The queue and its workers, on the `tasks` table alone.
//!
//! - `store`: the claim, lease, outcome, rescue and upkeep statements;
//! - wake-ups and cancellations arrive on the process's listener
//!   (`events::Listener`), on [`DUE_CHANNEL`] and [`CANCEL_CHANNEL`];
//! - `worker`: the process-wide runtime that claims tasks into free slots, runs
//!   them on their provider, keeps its lease and records their outcomes;
//! - `outcome`: attempts, how they ended, and the retry backoff.
//!
//! Guarantees (see ARCHITECTURE.md): no row, input or single fault stops or
//! starves the queue; a claimed task is one worker's at a time (SKIP LOCKED
//! claims, leases); outcomes are fenced by (worker, attempt), so a worker
//! that lost its lease cannot overwrite its successor's work.

pub mod outcome;
pub mod store;
mod worker;

pub use outcome::{AttemptId, Backoff, Outcome, Verdict};
pub use worker::{SHUTDOWN_FLUSH, Worker, WorkerConfig};

/// The channel a NOTIFY names when a task becomes due.
pub const DUE_CHANNEL: &str = "taskrunner_task_due";
/// The channel a NOTIFY names, with the task id, when cancellation is asked for.
pub const CANCEL_CHANNEL: &str = "taskrunner_task_cancel";
