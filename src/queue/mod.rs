//! The queue and its workers, on the `tasks` table alone.
//!
//! - `store`: the claim, lease, outcome, rescue and upkeep statements;
//! - `listener`: LISTEN/NOTIFY wake-ups and cancellations on a dedicated connection;
//! - `notifier`: the API's side of the wake-up, sent after a create commits;
//! - `worker`: the process-wide runtime that claims tasks into free slots, runs
//!   them on their provider, keeps its lease and records their outcomes;
//! - `outcome`: attempts, how they ended, and the retry backoff.
//!
//! Guarantees (see ARCHITECTURE.md): no row, input or single fault stops or
//! starves the queue; a claimed task is one worker's at a time (SKIP LOCKED
//! claims, leases); outcomes are fenced by (worker, attempt), so a worker
//! that lost its lease cannot overwrite its successor's work.

mod listener;
mod notifier;
pub mod outcome;
pub mod store;
mod worker;

pub use notifier::DueNotifier;
pub use outcome::{AttemptId, Backoff, Outcome, Verdict};
pub use worker::{SHUTDOWN_FLUSH, Worker, WorkerConfig};
