//! A task as stored, and the shapes used to create and change one.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::db::schema::tasks;
use crate::tasks::TaskStatus;

/// One unit of AI work: a prompt for a model, and what came of it.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Identifiable)]
#[diesel(table_name = tasks, check_for_backend(diesel::pg::Pg))]
pub struct Task {
    pub id: i64,
    pub prompt: String,
    pub model: String,
    pub priority: i16,
    pub status: TaskStatus,
    pub result: Option<String>,
    pub error: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub run_at: DateTime<Utc>,
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    /// Attempts that ended because their worker was lost (killed, crashed, cut off).
    pub lost_attempts: i32,
    /// The tenant the task belongs to.
    pub tenant: String,
    /// The key its creator gave so that a retried create returns this task.
    pub idempotency_key: Option<String>,
}

/// A validated request to create a task; the database fills in the rest.
///
/// `None` inserts NULL, not DEFAULT: a statement whose text depends on which
/// fields are set could not be prepared once and reused.
#[derive(Debug, Clone, PartialEq, Insertable)]
#[diesel(table_name = tasks, check_for_backend(diesel::pg::Pg))]
#[diesel(treat_none_as_default_value = false)]
pub struct NewTask {
    pub prompt: String,
    pub model: String,
    pub priority: i16,
    pub max_attempts: i32,
    /// Not before this instant; `None` means now, by the database's clock
    /// (`store::insert` then leaves the column to its default).
    #[diesel(skip_insertion)]
    pub run_at: Option<DateTime<Utc>>,
    pub system_prompt: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub tenant: String,
    pub idempotency_key: Option<String>,
}

/// A validated change to a pending task; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, AsChangeset)]
#[diesel(table_name = tasks, check_for_backend(diesel::pg::Pg))]
pub struct TaskChanges {
    pub prompt: Option<String>,
    pub model: Option<String>,
    pub priority: Option<i16>,
    pub max_attempts: Option<i32>,
}

impl TaskChanges {
    /// Whether the change would change nothing.
    pub fn is_empty(&self) -> bool {
        *self == TaskChanges::default()
    }
}
