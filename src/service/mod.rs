//! What the API does to tasks, whichever surface was asked: GraphQL
//! (`graphql/`) or MCP (`mcp/`).
//!
//! Each operation is one function that does everything a request needs
//! beyond reading its arguments: check the input against the domain's rules,
//! check that a model is served, take a connection, call the store, turn the
//! store's outcome into a result or an [`ApiError`], and announce the change.
//! The surfaces only translate arguments in and results out, so a rule, a
//! message or an error code cannot differ between them.
//!
//! (Free functions over [`AppState`], not methods on it: `app.rs` stays the
//! state, and the operations read as a list in two short files.)

mod commands;
mod queries;

use std::future::Future;
use std::ops::DerefMut;

use diesel_async::AsyncPgConnection;

use crate::app::AppState;
use crate::db::DbConn;
use crate::error::ApiError;

pub use commands::{
    MAX_BATCH_TASKS, cancel_task, create_task, create_tasks, delete_task, retry_task, update_task,
};
pub use queries::{ListArguments, TaskList, find_task, get_task, list_tasks, models, task_stats};

/// Where an operation takes its database connection from, and when.
///
/// Operations check their input first and take a connection only once it
/// passed, so bad input costs no connection. A GraphQL request takes its
/// connections within its budget (`graphql::budget`); an MCP tool call takes
/// one from the pool ([`AppState`]).
pub trait Connections: Sync {
    /// The connection handed out; the pool gets it back when it is dropped.
    type Conn: DerefMut<Target = AsyncPgConnection> + Send;

    /// A connection, or SERVICE_UNAVAILABLE once the pool's wait timeout passes.
    fn connection(&self) -> impl Future<Output = Result<Self::Conn, ApiError>> + Send;
}

impl Connections for AppState {
    type Conn = DbConn;

    fn connection(&self) -> impl Future<Output = Result<DbConn, ApiError>> + Send {
        self.db()
    }
}
