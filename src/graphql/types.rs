//! The GraphQL shapes of a task and of the inputs that create, change and list tasks.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use crate::error::ApiError;
use crate::graphql::budget;
use crate::output;
use crate::queue::AttemptId;
use crate::tasks::listing::{FilterFields, OrderDirection, TaskOrder, TaskOrderField};
use crate::tasks::store::Stats;
use crate::tasks::validation::TaskFields;
use crate::tasks::{Task, TaskStatus};

/// A task as the API shows it.
pub struct TaskNode(pub Task);

/// A unit of AI work: a prompt for a model, queued by priority, and what came of it.
#[Object(name = "Task")]
impl TaskNode {
    /// The task's id: its decimal database id.
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// The prompt sent to the model.
    async fn prompt(&self) -> &str {
        &self.0.prompt
    }
    /// The model that runs the task, e.g. `gpt-4o-mini` or `llama3.1:8b`.
    async fn model(&self) -> &str {
        &self.0.model
    }
    /// 1 (lowest) to 10 (highest): higher-priority tasks are run first.
    async fn priority(&self) -> i32 {
        i32::from(self.0.priority)
    }
    /// Where the task is in its life.
    async fn status(&self) -> TaskStatus {
        self.0.status
    }
    /// The model's answer, once the task has SUCCEEDED.
    async fn result(&self) -> Option<&str> {
        self.0.result.as_deref()
    }
    /// While the task is RUNNING, its current attempt's answer so far, as its
    /// worker saved it (about once a second; empty until then); null once it
    /// is not running. `taskOutput` follows the answer as it is written.
    async fn partial_result(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        if self.0.status != TaskStatus::Running {
            return Ok(None);
        }
        let attempt = AttemptId {
            task_id: self.0.id,
            attempt: self.0.attempts,
        };
        let mut conn = budget::connection(ctx).await?;
        let saved = output::store::saved_text(&mut conn, attempt)
            .await
            .map_err(ApiError::from)?;
        Ok(Some(saved.unwrap_or_default()))
    }
    /// Why the last attempt failed, if it did.
    async fn error(&self) -> Option<&str> {
        self.0.error.as_deref()
    }
    /// How many times a worker has started the task.
    async fn attempts(&self) -> i32 {
        self.0.attempts
    }
    /// How many attempts the task may make before it is FAILED.
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }
    /// When the task was created.
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// When the task last changed, by anyone.
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// When a worker last started the task.
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    /// When the task reached SUCCEEDED, FAILED or CANCELLED.
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// Not before this instant: when it was asked to run, or when its next
    /// retry is due.
    async fn run_at(&self) -> DateTime<Utc> {
        self.0.run_at
    }
    /// The system prompt sent before the prompt, if any.
    async fn system(&self) -> Option<&str> {
        self.0.system_prompt.as_deref()
    }
    /// The sampling temperature asked for, if any.
    async fn temperature(&self) -> Option<f64> {
        self.0.temperature
    }
    /// The most tokens the answer may have, if limited.
    async fn max_tokens(&self) -> Option<i32> {
        self.0.max_tokens
    }
    /// How long one attempt may run, in seconds; null means the deployment's default.
    async fn timeout_seconds(&self) -> Option<i32> {
        self.0.timeout_seconds
    }
    /// Tokens in the prompt, as the provider counted them.
    async fn prompt_tokens(&self) -> Option<i32> {
        self.0.prompt_tokens
    }
    /// Tokens in the answer, as the provider counted them.
    async fn completion_tokens(&self) -> Option<i32> {
        self.0.completion_tokens
    }
    /// The tenant the task belongs to: the tenant of the token that created
    /// it (`default` when tokens are off).
    async fn tenant(&self) -> &str {
        &self.0.tenant
    }
    /// The worker running the task, while it is RUNNING.
    async fn worker_id(&self) -> Option<&str> {
        self.0.worker_id.as_deref()
    }
    /// Whether cancellation was asked for while the task was RUNNING (its
    /// worker stops it and records CANCELLED).
    async fn cancel_requested(&self) -> bool {
        self.0.cancel_requested
    }
}

/// A new task. It starts PENDING.
#[derive(InputObject)]
pub struct CreateTaskInput {
    /// The prompt for the model: 1 to 100,000 characters.
    pub prompt: String,
    /// The model to run it on: 1 to 100 of `A-Z a-z 0-9 . _ : / -`.
    pub model: String,
    /// 1 (lowest) to 10 (highest).
    #[graphql(default_with = "Some(5)")]
    pub priority: Option<i32>,
    /// How many attempts the task may make: 1 to 20.
    #[graphql(default_with = "Some(3)")]
    pub max_attempts: Option<i32>,
    /// Do not run before this instant (default: now).
    pub run_at: Option<DateTime<Utc>>,
    /// How long one attempt may run, in seconds (1 to 86,400; default: the
    /// deployment's). An attempt that runs longer is stopped and retried.
    pub timeout_seconds: Option<i32>,
    /// A system prompt, sent before the prompt (up to 100,000 characters).
    pub system: Option<String>,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// The most tokens the answer may have, 1 to 1,000,000.
    pub max_tokens: Option<i32>,
    /// A key (1 to 200 characters) that makes this create safe to repeat:
    /// another create with the same key, by the same tenant, returns the task
    /// the first one made (the same id; no second task), even when the two
    /// race.
    pub idempotency_key: Option<String>,
}

impl From<CreateTaskInput> for TaskFields {
    fn from(input: CreateTaskInput) -> Self {
        TaskFields {
            prompt: Some(input.prompt),
            model: Some(input.model),
            priority: input.priority,
            max_attempts: input.max_attempts,
            run_at: input.run_at,
            system: input.system,
            temperature: input.temperature,
            max_tokens: input.max_tokens,
            timeout_seconds: input.timeout_seconds,
            idempotency_key: input.idempotency_key,
        }
    }
}

/// A change to a PENDING task. Fields left out (or null) keep their value.
#[derive(InputObject)]
pub struct UpdateTaskInput {
    /// A new prompt: 1 to 100,000 characters.
    pub prompt: Option<String>,
    /// A new model: 1 to 100 of `A-Z a-z 0-9 . _ : / -`.
    pub model: Option<String>,
    /// A new priority, 1 (lowest) to 10 (highest).
    pub priority: Option<i32>,
    /// A new attempt budget, 1 to 20.
    pub max_attempts: Option<i32>,
}

impl From<UpdateTaskInput> for TaskFields {
    fn from(input: UpdateTaskInput) -> Self {
        TaskFields {
            prompt: input.prompt,
            model: input.model,
            priority: input.priority,
            max_attempts: input.max_attempts,
            ..TaskFields::default()
        }
    }
}

/// Which tasks to list. Every condition given must hold.
#[derive(InputObject, Default)]
#[graphql(name = "TaskFilter")]
pub struct TaskFilterInput {
    /// Only tasks in one of these states.
    pub status: Option<Vec<TaskStatus>>,
    /// Only tasks for exactly this model.
    pub model: Option<String>,
    /// Only tasks with at least this priority (1 to 10).
    pub min_priority: Option<i32>,
    /// Only tasks with at most this priority (1 to 10).
    pub max_priority: Option<i32>,
    /// Only tasks created strictly after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only tasks created strictly before this instant.
    pub created_before: Option<DateTime<Utc>>,
    /// Only tasks of this tenant. A token that is not an admin's sees its
    /// own tenant's tasks only, whatever this says.
    pub tenant: Option<String>,
}

impl From<TaskFilterInput> for FilterFields {
    fn from(input: TaskFilterInput) -> Self {
        FilterFields {
            status: input.status,
            model: input.model,
            min_priority: input.min_priority,
            max_priority: input.max_priority,
            created_after: input.created_after,
            created_before: input.created_before,
            tenant: input.tenant,
        }
    }
}

/// How to order the task list. Ties are broken by id, in the same direction.
#[derive(InputObject)]
#[graphql(name = "TaskOrder")]
pub struct TaskOrderInput {
    /// The sort key.
    #[graphql(default_with = "TaskOrderField::CreatedAt")]
    pub field: TaskOrderField,
    /// Which way it runs.
    #[graphql(default_with = "OrderDirection::Desc")]
    pub direction: OrderDirection,
}

impl From<TaskOrderInput> for TaskOrder {
    fn from(input: TaskOrderInput) -> Self {
        TaskOrder {
            field: input.field,
            direction: input.direction,
        }
    }
}

/// How many tasks are in each state, for dashboards and autoscaling.
#[derive(SimpleObject)]
pub struct TaskStats {
    /// Tasks waiting for a worker (due or delayed).
    pub pending: i64,
    /// Tasks a worker is running.
    pub running: i64,
    /// Tasks finished with a result.
    pub succeeded: i64,
    /// Tasks finished with an error.
    pub failed: i64,
    /// Tasks stopped on request.
    pub cancelled: i64,
    /// How long the longest-waiting due task has waited since it fell due, in
    /// seconds: 0 when every pending task is delayed, null when none is pending.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// A model this deployment can run.
#[derive(SimpleObject)]
pub struct ModelInfo {
    /// The model's name as `createTask` takes it; `prefix*` stands for every
    /// name with that prefix, `*` for any name.
    pub name: String,
    /// The provider that runs it (as configured: `openai`, `ollama`, `echo`, …).
    pub provider: String,
}

impl From<Stats> for TaskStats {
    fn from(stats: Stats) -> Self {
        TaskStats {
            pending: stats.count(TaskStatus::Pending),
            running: stats.count(TaskStatus::Running),
            succeeded: stats.count(TaskStatus::Succeeded),
            failed: stats.count(TaskStatus::Failed),
            cancelled: stats.count(TaskStatus::Cancelled),
            oldest_pending_age_seconds: stats.oldest_pending_age_seconds(),
        }
    }
}
