//! Each request's share of the connection pool.
//!
//! async-graphql resolves the fields of a query at once, so a request of 2,000
//! fields that each run a statement would take every pooled connection and
//! keep them until it is done, while other clients wait and are answered
//! SERVICE_UNAVAILABLE. So every request gets a budget of
//! [`AppState::connections_per_request`] connections, added to the request's
//! data by [`ConnectionBudget`] (an extension, so that it applies however the
//! schema is executed); resolvers take their connection with [`connection`],
//! which takes one of the budget's permits first. A request's other fields
//! wait their turn, and no request holds more than its share.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::{Context, Request, ServerResult};
use diesel_async::AsyncPgConnection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::{AppState, DEFAULT_CONNECTIONS_PER_REQUEST};
use crate::db::DbConn;
use crate::error::ApiError;

/// The extension that gives every request its budget of connections (read
/// from the schema's [`AppState`]).
pub struct ConnectionBudget;

impl ExtensionFactory for ConnectionBudget {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ConnectionBudget)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ConnectionBudget {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let permits = ctx.data_opt::<AppState>().map_or(
            DEFAULT_CONNECTIONS_PER_REQUEST,
            AppState::connections_per_request,
        );
        let budget = RequestConnections {
            permits: Arc::new(Semaphore::new(permits)),
        };
        next.run(ctx, request.data(budget)).await
    }
}

/// The connections one request may still take: a permit per connection.
struct RequestConnections {
    permits: Arc<Semaphore>,
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
            "the schema was built without the ConnectionBudget extension"
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
