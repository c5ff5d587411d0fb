//! The queue's statements. Each is one short statement in its own
//! transaction: nothing is held open while a model is thinking.
//!
//! - `claim`: take due tasks (in batches, or given ids), and end a task that
//!   cannot be started;
//! - `outcomes`: record finished attempts, fenced by (worker, attempt);
//! - `leases`: a worker's lease (one row per worker process), its running
//!   tasks, rescuing the tasks of lost workers, handing tasks back;
//! - `upkeep`: ending tasks with no attempts left, folding the status
//!   counters, forgetting long-dead workers.
//!
//! A batch statement can fail because of one row (written by another program,
//! or broken by an operator's trigger or constraint). [`Splitter`] splits such
//! a batch until the rows at fault stand alone, so one row never stops the queue.

mod claim;
mod leases;
mod outcomes;
mod upkeep;

pub use claim::{claim_batch, claim_candidates, claim_ids, fail_unstartable, next_due_in};
pub use leases::{
    LeaseState, RescuedTask, adopt, heartbeat, lost_tasks, release, rescue_ids, rescue_lost,
    unregister,
};
pub use outcomes::{fail_unrecordable, record_outcomes};
pub use upkeep::{fold_status_counts, forget_dead_workers, sweep_exhausted};

use diesel::result::Error;

use crate::db::is_transient;

/// Finds the items of a batch that make a statement fail, by halving: run the
/// statement on each part [`Splitter::next_part`] gives, and report a failure
/// with [`Splitter::failed`]. A part that fails for a reason that is not
/// transient is split, until every item that fails does so alone. A transient
/// failure (the connection, a timeout) says nothing about the rows: it ends
/// the search.
#[derive(Debug)]
pub struct Splitter<'a, T> {
    parts: Vec<&'a [T]>,
    /// The items that failed the statement on their own, and why.
    pub alone: Vec<(T, Error)>,
}

impl<'a, T: Clone> Splitter<'a, T> {
    /// A search over `items`, starting with all of them.
    pub fn new(items: &'a [T]) -> Self {
        Splitter {
            parts: vec![items],
            alone: Vec::new(),
        }
    }

    /// The next part to run the statement on.
    pub fn next_part(&mut self) -> Option<&'a [T]> {
        while let Some(part) = self.parts.pop() {
            if !part.is_empty() {
                return Some(part);
            }
        }
        None
    }

    /// The statement failed on `part`: split it, or set its one item aside.
    /// Returns the error back if it is transient.
    pub fn failed(&mut self, part: &'a [T], error: Error) -> Result<(), Error> {
        if is_transient(&error) {
            return Err(error);
        }
        match part {
            [item] => self.alone.push((item.clone(), error)),
            _ => {
                let (first, second) = part.split_at(part.len() / 2);
                self.parts.push(second);
                self.parts.push(first);
            }
        }
        Ok(())
    }
}

/// One id, as a row.
#[derive(Debug, diesel::QueryableByName)]
struct IdRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
}

/// A database error as one line for a task's `error` and the log.
pub fn describe(error: &Error) -> String {
    match error {
        Error::DatabaseError(_, info) => match info.details() {
            Some(details) => format!("{} ({details})", info.message()),
            None => info.message().to_owned(),
        },
        other => other.to_string(),
    }
}
