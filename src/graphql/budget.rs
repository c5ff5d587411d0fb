//! Each request's share of the connection pool.
//!
//! async-graphql resolves the fields of a query at once, so a request of 2,000
//! fields that each run a statement would take every pooled connection and
//! keep them until it is done, while other clients wait and are answered
//! SERVICE_UNAVAILABLE. So every request gets a budget of
//! [`AppState::connections_per_request`] connections, added to the request's
//! data by [`crate::graphql::TaskRunnerSchema::execute`] (the one way in to
//! the schema); resolvers take their connection with [`connection`], which
//! takes one of the budget's permits first. A request's other fields wait
//! their turn, and no request holds more than its share.
//!
//! (Not an async-graphql extension: the engine wraps every field of every
//! request in each extension's hooks, which cost list queries about a tenth
//! of their throughput.)

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use async_graphql::Context;
use diesel_async::AsyncPgConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::AppState;
use crate::db::DbConn;
use crate::error::ApiError;
use crate::service::Connections;

/// The connections one request may still take: a permit per connection.
/// [`crate::graphql::TaskRunnerSchema::execute`] adds one to every request.
pub(crate) struct RequestConnections {
    permits: Arc<Semaphore>,
}

impl RequestConnections {
    /// A budget of `permits` connections.
    pub(crate) fn new(permits: usize) -> Self {
        RequestConnections {
            permits: Arc::new(Semaphore::new(permits)),
        }
    }
}

/// A pooled connection taken within its request's budget; both go back when
/// it is dropped.
pub struct BudgetedConnection {
    conn: DbConn,
    _permit: OwnedSemaphorePermit,
}

impl Deref for BudgetedConnection {
    type Target = AsyncPgConnection;

    fn deref(&self) -> &AsyncPgConnection {
        &self.conn
    }
}

impl DerefMut for BudgetedConnection {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }
}

/// A connection for the resolver of `ctx`, within its request's budget.
///
/// Waits at most the pool's wait timeout in all (for a turn among the
/// request's fields, then for the pool), and is SERVICE_UNAVAILABLE after
/// that, as a request is when the pool itself is exhausted.
pub async fn connection(ctx: &Context<'_>) -> Result<BudgetedConnection, ApiError> {
    let Some(state) = ctx.data_opt::<AppState>() else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the schema was built without its AppState"
        )));
    };
    let Some(budget) = ctx.data_opt::<RequestConnections>() else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the request was executed without its connection budget"
        )));
    };
    let pool = state.pool();
    let take = async {
        let permit = Arc::clone(&budget.permits)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("the request's budget was closed")))?;
        let conn = pool.get().await?;
        Ok(BudgetedConnection {
            conn,
            _permit: permit,
        })
    };
    match pool.timeouts().wait {
        Some(wait) => tokio::time::timeout(wait, take).await.unwrap_or_else(|_| {
            tracing::warn!(
                wait_ms = wait.as_millis(),
                "no database connection within the request's budget in time"
            );
            Err(ApiError::ServiceUnavailable)
        }),
        None => take.await,
    }
}

/// The connections of the request `ctx` belongs to, for the operations in
/// [`crate::service`]: each takes its connection within the request's budget.
pub struct RequestBudget<'r, 'ctx>(pub &'r Context<'ctx>);

impl Connections for RequestBudget<'_, '_> {
    type Conn = BudgetedConnection;

    fn connection(&self) -> impl Future<Output = Result<BudgetedConnection, ApiError>> + Send {
        connection(self.0)
    }
}
