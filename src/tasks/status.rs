//! The states a task moves through, and how they are stored.

use std::io::Write;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};

use crate::db::schema::sql_types;

// The lifecycle (ARCHITECTURE.md draws it):
//   PENDING ──claim──▶ RUNNING ──▶ SUCCEEDED
//      ▲                  │  └───▶ FAILED      (permanent error, or attempts spent)
//      └─retryable error──┘
//   PENDING or RUNNING ──cancel──▶ CANCELLED
/// Where a task is in its life: PENDING, then RUNNING, then SUCCEEDED, FAILED
/// or CANCELLED. Stored as the PostgreSQL enum `task_status`.
// The serde and schemars names (the MCP tools') are the GraphQL enum's.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    AsExpression,
    FromSqlRow,
    async_graphql::Enum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[diesel(sql_type = sql_types::TaskStatus)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskStatus {
    /// Waiting for a worker.
    Pending,
    /// Claimed by a worker, which is calling the model.
    Running,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error after its attempts.
    Failed,
    /// Stopped on request before it finished.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    /// Whether a task in this status has finished: it leaves it only by
    /// `retryTask`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The label PostgreSQL stores for this status.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl ToSql<sql_types::TaskStatus, Pg> for TaskStatus {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(self.as_str().as_bytes())?;
        Ok(IsNull::No)
    }
}

impl FromSql<sql_types::TaskStatus, Pg> for TaskStatus {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let label = bytes.as_bytes();
        TaskStatus::ALL
            .into_iter()
            .find(|status| status.as_str().as_bytes() == label)
            .ok_or_else(|| {
                format!(
                    "unknown task_status label {:?}",
                    String::from_utf8_lossy(label)
                )
                .into()
            })
    }
}
