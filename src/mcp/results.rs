//! What the tools answer: a JSON object as `structuredContent`, and the same
//! object as JSON text in `content` for clients that read only text.
//!
//! A broken rule, a task not found or a task in the wrong state is a tool
//! error (`isError: true`) whose structured content is `{code, message,
//! field?}`, `code` being the GraphQL API's `extensions.code`. Tools declare
//! no `outputSchema`: error results could not match one, and some clients
//! check every result that has structured content against it.

use chrono::{DateTime, Utc};
use rmcp::model::CallToolResult;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::providers::routing::ModelInfo;
use crate::service::TaskList;
use crate::tasks::listing::Cursor;
use crate::tasks::store::Stats;
use crate::tasks::{Task, TaskStatus};

/// A task as the tools show it: the GraphQL API's `Task`, in snake_case.
#[derive(Debug, Serialize)]
pub struct TaskView {
    pub id: String,
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
    pub system: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    pub tenant: String,
}

impl From<Task> for TaskView {
    fn from(task: Task) -> Self {
        TaskView {
            id: task.id.to_string(),
            prompt: task.prompt,
            model: task.model,
            priority: task.priority,
            status: task.status,
            result: task.result,
            error: task.error,
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            created_at: task.created_at,
            updated_at: task.updated_at,
            started_at: task.started_at,
            finished_at: task.finished_at,
            run_at: task.run_at,
            system: task.system_prompt,
            temperature: task.temperature,
            max_tokens: task.max_tokens,
            timeout_seconds: task.timeout_seconds,
            prompt_tokens: task.prompt_tokens,
            completion_tokens: task.completion_tokens,
            worker_id: task.worker_id,
            cancel_requested: task.cancel_requested,
            tenant: task.tenant,
        }
    }
}

/// Tasks created together, in the order they were given (structured content
/// must be an object).
#[derive(Debug, Serialize)]
pub struct CreatedTasks {
    pub tasks: Vec<TaskView>,
}

impl From<Vec<Task>> for CreatedTasks {
    fn from(tasks: Vec<Task>) -> Self {
        CreatedTasks {
            tasks: tasks.into_iter().map(TaskView::from).collect(),
        }
    }
}

/// A page of the task list and the cursor of the next one (`None` on the last page).
#[derive(Debug, Serialize)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    pub next_cursor: Option<String>,
}

impl From<TaskList> for TaskPage {
    fn from(list: TaskList) -> Self {
        let next_cursor = list
            .page
            .has_next_page
            .then(|| list.page.tasks.last())
            .flatten()
            .map(|last| Cursor::of(last, list.order.field).encode());
        TaskPage {
            tasks: list.page.tasks.into_iter().map(TaskView::from).collect(),
            next_cursor,
        }
    }
}

/// The models this deployment serves (structured content must be an object).
#[derive(Debug, Serialize)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

/// A model and the provider that runs it; `prefix*` stands for every name
/// with that prefix, `*` for any name.
#[derive(Debug, Serialize)]
pub struct ModelView {
    pub name: String,
    pub provider: String,
}

impl From<Vec<ModelInfo>> for ModelList {
    fn from(models: Vec<ModelInfo>) -> Self {
        let models = models
            .into_iter()
            .map(|model| ModelView {
                name: model.name,
                provider: model.provider,
            })
            .collect();
        ModelList { models }
    }
}

/// How many tasks are in each state, as the GraphQL API's `taskStats`.
#[derive(Debug, Serialize)]
pub struct StatsView {
    pub pending: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub oldest_pending_age_seconds: Option<f64>,
}

impl From<Stats> for StatsView {
    fn from(stats: Stats) -> Self {
        StatsView {
            pending: stats.count(TaskStatus::Pending),
            running: stats.count(TaskStatus::Running),
            succeeded: stats.count(TaskStatus::Succeeded),
            failed: stats.count(TaskStatus::Failed),
            cancelled: stats.count(TaskStatus::Cancelled),
            oldest_pending_age_seconds: stats.oldest_pending_age_seconds(),
        }
    }
}

/// A tool's answer: its value, or the tool error `outcome` carries.
pub fn answer<T: Serialize>(outcome: Result<T, ApiError>) -> CallToolResult {
    let error = match outcome.map(serde_json::to_value) {
        Ok(Ok(value)) => return CallToolResult::structured(value),
        Ok(Err(unserialisable)) => ApiError::Internal(unserialisable.into()),
        Err(error) => error,
    };
    CallToolResult::structured_error(error_content(&error))
}

/// `{code, message, field?}` for `error`; internal details go to the log only.
fn error_content(error: &ApiError) -> Value {
    match error {
        ApiError::BadUserInput { field, message } => {
            let argument = argument_name(field);
            json!({
                "code": error.code(),
                "message": format!("invalid {argument}: {message}"),
                "field": argument,
            })
        }
        ApiError::Internal(detail) => {
            tracing::error!(error = ?detail, "internal error while answering a tool call");
            json!({ "code": error.code(), "message": error.message() })
        }
        ApiError::RateLimited {
            retry_after_seconds,
            ..
        } => json!({
            "code": error.code(),
            "message": error.message(),
            "retry_after_seconds": retry_after_seconds,
        }),
        _ => json!({ "code": error.code(), "message": error.message() }),
    }
}

/// The tool argument behind a field the domain's rules name as the GraphQL
/// API spells it (`maxAttempts`, `filter.model`): the tools' arguments are
/// snake_case, and the list filter's are top-level arguments.
fn argument_name(field: &str) -> String {
    let field = field.strip_prefix("filter.").unwrap_or(field);
    let mut name = String::with_capacity(field.len() + 4);
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
            name.push(c.to_ascii_lowercase());
        } else {
            name.push(c);
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_as_the_tools_arguments() {
        assert_eq!(argument_name("maxAttempts"), "max_attempts");
        assert_eq!(argument_name("timeoutSeconds"), "timeout_seconds");
        assert_eq!(argument_name("filter.model"), "model");
        assert_eq!(argument_name("prompt"), "prompt");
        assert_eq!(
            argument_name("inputs.3.maxAttempts"),
            "inputs.3.max_attempts"
        );
    }
}
