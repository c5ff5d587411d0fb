//! The tools. Each hands its arguments to the operation in [`crate::service`]
//! that the GraphQL API's resolver calls too, so both surfaces keep the same
//! rules, messages and error codes; a tool only shapes the answer.

use rmcp::model::CallToolResult;
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};

use crate::mcp::TaskRunnerMcp;
use crate::mcp::args::{
    Arguments, CreateTaskArgs, CreateTasksArgs, ListTasksArgs, TaskIdArgs, WaitForTaskArgs,
    input_schema,
};
use crate::mcp::results::{CreatedTasks, ModelList, StatsView, TaskPage, TaskView, answer};
use crate::mcp::wait;
use crate::service::{self, ListArguments};
use crate::tasks::listing::FilterFields;

#[tool_router(vis = "pub(super)")]
impl TaskRunnerMcp {
    #[tool(
        input_schema = input_schema::<CreateTaskArgs>(),
        description = "Queue an AI task: a prompt for a model. It starts PENDING and a worker runs \
                       it when it is due (highest priority first). Returns the task; follow it with \
                       `wait_for_task` or `get_task`.",
        annotations(title = "Create a task", destructive_hint = false)
    )]
    async fn create_task(
        &self,
        Arguments(args): Arguments<CreateTaskArgs>,
        request: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let created = async {
            let principal = self.principal(&request)?;
            service::create_task(&self.state, &self.state, &principal, args.into()).await
        }
        .await;
        answer(created.map(TaskView::from))
    }

    #[tool(
        input_schema = input_schema::<CreateTasksArgs>(),
        description = "Queue 1 to 1,000 AI tasks at once, all or none: if any input breaks a rule \
                       (the error names it, e.g. `inputs.3.prompt`), none is created. Each input \
                       takes the arguments of `create_task`. Returns `tasks` in the order given; \
                       an input whose `idempotency_key` was used before returns that task.",
        annotations(title = "Create tasks", destructive_hint = false)
    )]
    async fn create_tasks(
        &self,
        Arguments(args): Arguments<CreateTasksArgs>,
        request: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let created = async {
            let principal = self.principal(&request)?;
            let inputs = args.inputs.into_iter().map(Into::into).collect();
            service::create_tasks(&self.state, &self.state, &principal, inputs).await
        }
        .await;
        answer(created.map(CreatedTasks::from))
    }

    #[tool(
        input_schema = input_schema::<TaskIdArgs>(),
        description = "A task by id: its status (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED), \
                       the model's answer (`result`) once SUCCEEDED, the last `error`, attempts and times.",
        annotations(title = "Get a task", read_only_hint = true)
    )]
    async fn get_task(
        &self,
        Arguments(args): Arguments<TaskIdArgs>,
        request: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let task = async {
            let principal = self.principal(&request)?;
            service::get_task(&self.state, &principal, &args.id).await
        }
        .await;
        answer(task.map(TaskView::from))
    }

    #[tool(
        input_schema = input_schema::<ListTasksArgs>(),
        description = "Tasks, newest first, a page at a time (20 unless `first` says, 100 at most), \
                       optionally only those in one status or for one model. Pass the answer's \
                       `next_cursor` as `after` for the next page; it is null on the last page.",
        annotations(title = "List tasks", read_only_hint = true)
    )]
    async fn list_tasks(
        &self,
        Arguments(args): Arguments<ListTasksArgs>,
        request: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let arguments = ListArguments {
            filter: FilterFields {
                status: args.status.map(|status| vec![status]),
                model: args.model,
                ..FilterFields::default()
            },
            first: args.first,
            after: args.after,
            ..ListArguments::default()
        };
        let list = async {
            let principal = self.principal(&request)?;
            service::list_tasks(&self.state, &principal, arguments).await
        }
        .await;
        answer(list.map(TaskPage::from))
    }

    #[tool(
        input_schema = input_schema::<TaskIdArgs>(),
        description = "Cancel a task. A PENDING task is CANCELLED at once; a RUNNING one comes back \
                       with `cancel_requested` set and its worker stops it within moments. A \
                       CONFLICT error once the task has finished.",
        annotations(title = "Cancel a task", idempotent_hint = false)
    )]
    async fn cancel_task(
        &self,
        Arguments(args): Arguments<TaskIdArgs>,
        request: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let task = async {
            let principal = self.principal(&request)?;
            service::cancel_task(&self.state, &self.state, &principal, &args.id).await
        }
        .await;
        answer(task.map(TaskView::from))
    }

    #[tool(
        input_schema = input_schema::<TaskIdArgs>(),
        description = "Queue a FAILED or CANCELLED task again as PENDING, with a fresh attempt \
                       budget. A CONFLICT error for tasks in any other state.",
        annotations(title = "Retry a task", destructive_hint = false)
    )]
    async fn retry_task(
        &self,
        Arguments(args): Arguments<TaskIdArgs>,
        request: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let task = async {
            let principal = self.principal(&request)?;
            service::retry_task(&self.state, &self.state, &principal, &args.id).await
        }
        .await;
        answer(task.map(TaskView::from))
    }

    #[tool(
        input_schema = input_schema::<WaitForTaskArgs>(),
        description = "Wait for a task to finish: returns it as soon as it is SUCCEEDED (with the \
                       model's `result`), FAILED or CANCELLED, or as it stands when \
                       `timeout_seconds` (default 60, at most 600) have passed; then call again to \
                       keep waiting. Sends progress notifications while it waits.",
        annotations(title = "Wait for a task", read_only_hint = true)
    )]
    async fn wait_for_task(
        &self,
        Arguments(args): Arguments<WaitForTaskArgs>,
        request: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let task = async {
            let principal = self.principal(&request)?;
            wait::wait_for_task(
                &self.state,
                &principal,
                &args.id,
                args.timeout_seconds,
                &request,
            )
            .await
        }
        .await;
        answer(task.map(TaskView::from))
    }

    #[tool(
        description = "The models this deployment can run and the provider of each: a name \
                       `create_task` takes as `model`; `prefix*` stands for every name with that \
                       prefix, `*` for any name.",
        annotations(title = "List models", read_only_hint = true)
    )]
    async fn list_models(&self, request: RequestContext<RoleServer>) -> CallToolResult {
        let models = self
            .principal(&request)
            .map(|_| ModelList::from(service::models(&self.state)));
        answer(models)
    }

    #[tool(
        description = "How many tasks are in each state, and how long the longest-waiting due task \
                       has waited (`oldest_pending_age_seconds`, null when none is pending).",
        annotations(title = "Task statistics", read_only_hint = true)
    )]
    async fn task_stats(&self, request: RequestContext<RoleServer>) -> CallToolResult {
        let stats = async {
            let principal = self.principal(&request)?;
            service::task_stats(&self.state, &principal).await
        }
        .await;
        answer(stats.map(StatsView::from))
    }
}
