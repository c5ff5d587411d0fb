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
pub use upkeep::{fold_status_counts, forget_dead_workers, forget_tombstones, sweep_exhausted};

use diesel::result::Error;

use crate::db::{is_statement_timeout, is_transient};

/// Finds the items of a batch that make a statement fail, by halving: run the
/// statement on each part [`Splitter::next_part`] gives, and report a failure
/// with [`Splitter::failed`]. A part that fails for a reason that is not
/// transient is split, until every item that fails does so alone. A part that
/// ran out of time is split too (a smaller part takes less), but one item
/// that does is not blamed. Any other transient failure (the connection, a
/// deadlock) says nothing about the rows: it ends the search.
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
        let too_slow = is_statement_timeout(&error);
        if (too_slow && part.len() == 1) || (!too_slow && is_transient(&error)) {
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

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind, Error};

    use super::Splitter;

    fn refused() -> Error {
        Error::DatabaseError(
            DatabaseErrorKind::CheckViolation,
            Box::new("new row violates check constraint".to_owned()),
        )
    }

    fn timed_out() -> Error {
        Error::DatabaseError(
            DatabaseErrorKind::Unknown,
            Box::new("canceling statement due to statement timeout".to_owned()),
        )
    }

    #[test]
    fn the_rows_that_fail_a_batch_are_found_alone() {
        let items: Vec<i32> = (1..=100).collect();
        let mut splitter = Splitter::new(&items);
        let mut done = Vec::new();
        let mut runs = 0;
        while let Some(part) = splitter.next_part() {
            runs += 1;
            if part.contains(&13) || part.contains(&77) {
                splitter.failed(part, refused()).unwrap();
            } else {
                done.extend_from_slice(part);
            }
        }
        let alone: Vec<i32> = splitter.alone.iter().map(|(item, _)| *item).collect();
        assert_eq!(alone, [13, 77]);
        assert_eq!(done.len(), 98);
        assert!(runs <= 30, "found by halving, not one by one: {runs} runs");
    }

    #[test]
    fn a_slow_batch_is_split_but_a_slow_row_is_not_blamed() {
        let items = [1, 2, 3, 4];
        let mut splitter = Splitter::new(&items);
        let whole = splitter.next_part().unwrap();
        splitter.failed(whole, timed_out()).unwrap();
        let half = splitter.next_part().unwrap();
        assert_eq!(half, [1, 2]);
        splitter.failed(half, timed_out()).unwrap();
        let one = splitter.next_part().unwrap();
        assert!(
            splitter.failed(one, timed_out()).is_err(),
            "transient for one row"
        );
        assert!(splitter.alone.is_empty());
        let closed = Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection,
            Box::new("connection closed".to_owned()),
        );
        assert!(splitter.failed(&items, closed).is_err());
    }
}
