//! A page of the task list as a Relay connection, built from
//! `async_graphql::connection`'s edge and page-info types.

use async_graphql::connection::{Edge, EmptyFields, PageInfo};
use async_graphql::{Context, Object};

use crate::error::ApiError;
use crate::graphql::budget;
use crate::graphql::types::TaskNode;
use crate::service::TaskList;
use crate::tasks::listing::TaskFilter;
use crate::tasks::{Scope, listing, store};

/// An edge of the task list: a task and its cursor.
pub type TaskEdge = Edge<String, TaskNode, EmptyFields>;

/// A page of the task list.
pub struct TaskConnection {
    edges: Vec<TaskEdge>,
    has_previous_page: bool,
    has_next_page: bool,
    filter: TaskFilter,
    scope: Scope,
}

impl TaskConnection {
    /// The connection for one page of a list.
    pub fn new(list: TaskList) -> Self {
        let TaskList {
            page,
            order,
            filter,
            scope,
        } = list;
        let field = order.field;
        let edges = page
            .tasks
            .into_iter()
            .map(|task| {
                let cursor = listing::Cursor::of(&task, field).encode();
                Edge::new(cursor, TaskNode(task))
            })
            .collect();
        TaskConnection {
            edges,
            has_previous_page: page.has_previous_page,
            has_next_page: page.has_next_page,
            filter,
            scope,
        }
    }
}

/// A page of tasks (a Relay connection): the tasks, their cursors, and where
/// the page lies in the whole list.
#[Object]
impl TaskConnection {
    /// Where this page lies: whether tasks come before or after it, and the
    /// cursors to fetch them.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_previous_page: self.has_previous_page,
            has_next_page: self.has_next_page,
            start_cursor: self.edges.first().map(|edge| edge.cursor.clone()),
            end_cursor: self.edges.last().map(|edge| edge.cursor.clone()),
        }
    }

    /// The tasks of this page, each with its cursor.
    async fn edges(&self) -> &[TaskEdge] {
        &self.edges
    }

    /// The tasks of this page, without cursors.
    async fn nodes(&self) -> Vec<&TaskNode> {
        self.edges.iter().map(|edge| &edge.node).collect()
    }

    /// How many tasks match the filter, across all pages (of the tenant's
    /// tasks, for a token that is not an admin's). Counted only when asked for.
    // A count visits every matching task: it is priced far above a field (see
    // `MAX_COMPLEXITY`), and `tasks` reads this mark to charge it.
    #[graphql(complexity = "super::TOTAL_COUNT_MARK")]
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let mut conn = budget::connection(ctx).await?;
        Ok(store::count(&mut conn, &self.scope, &self.filter)
            .await
            .map_err(ApiError::from)?)
    }
}
