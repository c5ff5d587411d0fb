//! The GraphQL surface: the schema, its limits, and its resolvers.

pub mod budget;
mod connection;
pub mod expansion;
mod mutation;
mod query;
pub mod types;

use async_graphql::{EmptySubscription, Schema, SchemaBuilder};

use crate::app::AppState;
pub use connection::TaskConnection;
pub use mutation::MutationRoot;
pub use query::QueryRoot;

/// The service's GraphQL schema.
pub type TaskRunnerSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// The code of errors the GraphQL engine raises before any resolver runs: a
/// query that does not parse, does not fit the schema, or is over a limit.
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// The deepest selection a request may make. GraphiQL's introspection query
/// (`ofType` nested seven times) is the deepest legitimate one.
pub const MAX_DEPTH: usize = 15;
/// The most work one request may ask for: each field costs 1, and the fields
/// under a task list cost once per row of the page.
pub const MAX_COMPLEXITY: usize = 5_000;

/// The most directives one field may carry (`@skip` and `@include` are the
/// only ones a query can use); thousands would only cost validation time.
const MAX_DIRECTIVES_PER_FIELD: usize = 8;

/// The schema with its limits, before any state is attached.
pub fn schema_builder() -> SchemaBuilder<QueryRoot, MutationRoot, EmptySubscription> {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_directives(MAX_DIRECTIVES_PER_FIELD)
        .extension(expansion::SelectionLimit)
}

/// The schema, serving from `state`: each request may hold at most
/// `state.connections_per_request()` pooled connections at once.
pub fn schema(state: AppState) -> TaskRunnerSchema {
    schema_builder()
        .extension(budget::ConnectionBudget)
        .data(state)
        .finish()
}

/// The schema in SDL, as exported to `schema.graphql`.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}
