//! The state every request handler shares.

use crate::config::DatabaseArgs;
use crate::db::{self, DbConn, DbPool};
use crate::error::ApiError;

/// What the API needs to answer a request: for now, the database pool.
/// Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct AppState {
    pool: DbPool,
}

impl AppState {
    /// State around an existing pool.
    pub fn new(pool: DbPool) -> Self {
        AppState { pool }
    }

    /// Prepares the database (create, migrate) and builds the pool.
    pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<Self> {
        db::prepare_database(args).await?;
        Ok(AppState::new(db::build_pool(args)?))
    }

    /// A pooled connection, or SERVICE_UNAVAILABLE within the pool's timeout.
    pub async fn db(&self) -> Result<DbConn, ApiError> {
        Ok(self.pool.get().await?)
    }

    /// The connection pool.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }
}
