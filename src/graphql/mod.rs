//! The GraphQL surface: the schema, its limits, and its resolvers.

pub mod budget;
mod connection;
pub mod expansion;
mod mutation;
mod output;
mod query;
mod subscription;
pub mod types;

use std::sync::Arc;
use std::time::Instant;

use async_graphql::futures_util::stream::{self, BoxStream, StreamExt};
use async_graphql::{
    Data, ErrorExtensionValues, MergedSubscription, Schema, SchemaBuilder, ServerError,
};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::metrics::{Metrics, OperationType};
pub use connection::TaskConnection;
pub use mutation::MutationRoot;
pub use output::OutputSubscriptions;
pub use query::QueryRoot;
pub use subscription::TaskSubscriptions;

/// Every subscription, from the objects that define them.
#[derive(MergedSubscription, Default)]
#[graphql(name = "Subscription")]
pub struct SubscriptionRoot(TaskSubscriptions, OutputSubscriptions);

/// The engine's schema type.
pub type EngineSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The service's GraphQL schema, and the one way to run a request on it:
/// [`TaskRunnerSchema::execute`] first refuses queries too large once their
/// fragments are inlined, and gives the request its budget of connections.
#[derive(Clone)]
pub struct TaskRunnerSchema {
    engine: EngineSchema,
    connections_per_request: usize,
    metrics: Arc<Metrics>,
}

impl TaskRunnerSchema {
    /// Runs one request.
    pub async fn execute(
        &self,
        request: impl Into<async_graphql::Request>,
    ) -> async_graphql::Response {
        let started = Instant::now();
        let mut request = request.into();
        let checked = expansion::check(&mut request);
        let operation = operation_type(&mut request);
        let response = match checked {
            Err(refused) => async_graphql::Response::from_errors(vec![refused]),
            Ok(()) => {
                let budget = budget::RequestConnections::new(self.connections_per_request);
                self.engine.execute(request.data(budget)).await
            }
        };
        self.metrics
            .graphql_request(operation, response.is_err(), started.elapsed());
        response
    }

    /// Runs one subscription: the same checks as [`TaskRunnerSchema::execute`],
    /// then a response per event. Every error carries a code.
    pub fn execute_stream(
        &self,
        request: impl Into<async_graphql::Request>,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, async_graphql::Response> {
        let started = Instant::now();
        let mut request = request.into();
        let checked = expansion::check(&mut request);
        let mut counted = StartCounted {
            metrics: Arc::clone(&self.metrics),
            operation: operation_type(&mut request),
            started,
            done: false,
        };
        if let Err(refused) = checked {
            return stream::once(async move {
                let response = async_graphql::Response::from_errors(vec![refused]);
                counted.count(&response);
                response
            })
            .boxed();
        }
        let budget = budget::RequestConnections::new(self.connections_per_request);
        self.engine
            .execute_stream_with_session_data(
                request.data(budget),
                session_data.unwrap_or_default(),
            )
            .map(move |mut response| {
                for error in &mut response.errors {
                    give_code(error);
                }
                counted.count(&response);
                response
            })
            .boxed()
    }

    /// The schema in SDL.
    pub fn sdl(&self) -> String {
        self.engine.sdl()
    }
}

/// Counts an operation run as a stream (over WebSocket) once: when its
/// first response goes out (an error if that response has errors), or, if
/// none ever does, when it ends. A subscription is counted when it starts
/// answering, not once per event.
struct StartCounted {
    metrics: Arc<Metrics>,
    operation: OperationType,
    started: Instant,
    done: bool,
}

impl StartCounted {
    fn count(&mut self, response: &async_graphql::Response) {
        if !self.done {
            self.done = true;
            self.metrics
                .graphql_request(self.operation, response.is_err(), self.started.elapsed());
        }
    }
}

impl Drop for StartCounted {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.metrics
                .graphql_request(self.operation, false, self.started.elapsed());
        }
    }
}

/// The type of the operation `request` runs, from its document (parsed once
/// and kept in the request); [`OperationType::Unknown`] when it does not
/// parse or names an operation it does not hold.
fn operation_type(request: &mut async_graphql::Request) -> OperationType {
    use async_graphql::parser::types::{DocumentOperations, OperationType as Parsed};
    let operation_name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return OperationType::Unknown;
    };
    let parsed = match (&document.operations, operation_name.as_deref()) {
        (DocumentOperations::Single(operation), _) => Some(operation.node.ty),
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .iter()
            .find(|(candidate, _)| candidate.as_str() == name)
            .map(|(_, operation)| operation.node.ty),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => operations
            .values()
            .next()
            .map(|operation| operation.node.ty),
        (DocumentOperations::Multiple(_), None) => None,
    };
    match parsed {
        Some(Parsed::Query) => OperationType::Query,
        Some(Parsed::Mutation) => OperationType::Mutation,
        Some(Parsed::Subscription) => OperationType::Subscription,
        None => OperationType::Unknown,
    }
}

/// The engine is driven through [`TaskRunnerSchema`] wherever it needs an
/// executor (the WebSocket transport), so subscriptions get the same checks.
impl async_graphql::Executor for TaskRunnerSchema {
    async fn execute(&self, request: async_graphql::Request) -> async_graphql::Response {
        TaskRunnerSchema::execute(self, request).await
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, async_graphql::Response> {
        TaskRunnerSchema::execute_stream(self, request, session_data)
    }
}

/// Gives an error raised by the engine itself (a query that does not parse,
/// does not fit the schema, or is over a limit) the code such errors carry;
/// resolvers' errors keep theirs.
pub fn give_code(error: &mut ServerError) {
    let extensions = error
        .extensions
        .get_or_insert_with(ErrorExtensionValues::default);
    if extensions.get("code").is_none() {
        extensions.set("code", VALIDATION_FAILED);
    }
}

/// Who the request acts as: the principal the HTTP or WebSocket layer put
/// in its data after checking its token. A request without one is refused,
/// so a transport that forgot to authenticate fails closed.
pub fn principal<'a>(ctx: &async_graphql::Context<'a>) -> Result<&'a Principal, ApiError> {
    ctx.data_opt::<Principal>()
        .ok_or(ApiError::Unauthenticated("a bearer token is required"))
}

/// The code of errors the GraphQL engine raises before any resolver runs: a
/// query that does not parse, does not fit the schema, or is over a limit.
pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";

/// The deepest selection a request may make. GraphiQL's introspection query
/// (`ofType` nested seven times) is the deepest legitimate one.
pub const MAX_DEPTH: usize = 15;

/// The most work one request may ask for, in units of one field of one row.
///
/// A field costs 1. A page of `tasks` costs 1, plus the fields under it once
/// per row of the page (`first` or `last`, 20 if neither is given), plus
/// [`TOTAL_COUNT_COST`] for each `totalCount`, once however large the page;
/// `taskStats` costs [`TASK_STATS_COST`] plus its fields.
///
/// So a full page of 100 tasks with every field of `edges`, `nodes` and
/// `pageInfo` (3,501) fits with its `totalCount` (4,001 in all), and so does
/// GraphiQL's introspection query; two such pages do not. Nine counts fit
/// (4,509), ten do not: the 2,000 aliased `tasks(first: 1) { totalCount }` that
/// once held every pooled connection for seconds cost 1,002,000.
pub const MAX_COMPLEXITY: usize = 5_000;

/// What one `totalCount` costs: as much as 500 fields. A count visits every
/// row its filter matches, so what it really costs grows with the table (on
/// 200,000 rows about 10 ms of PostgreSQL's time, where a page of 100 rows on
/// its index takes under 1 ms), and no fixed price can follow it. The price
/// bounds how many counts one request may run instead: one fits beside a
/// full page, nine on their own; the statement timeout bounds each of them.
/// It is charged once per count, not once per row of its page.
pub const TOTAL_COUNT_COST: usize = 500;

/// What `taskStats` costs: as much as a count. It runs four statements, and
/// two of them count the PENDING and RUNNING tasks, which are few while
/// workers keep up but are a count over the whole backlog when they do not.
pub const TASK_STATS_COST: usize = 500;

/// The complexity `totalCount` reports to the engine, which only ever adds
/// complexities up: a count is carried in the high half of the number, so the
/// page above it can tell its counts (charged [`TOTAL_COUNT_COST`] each) from
/// the fields of a row (the low half, charged once per row). The low half
/// cannot overflow into the high one: a query is refused before validation
/// when it holds more than [`expansion::MAX_SELECTIONS`] selections, and each
/// costs at most 1 there. (This needs a 64-bit `usize`.)
const TOTAL_COUNT_MARK: usize = 1 << 32;

/// The most directives one field may carry (`@skip` and `@include` are the
/// only ones a query can use); thousands would only cost validation time.
const MAX_DIRECTIVES_PER_FIELD: usize = 8;

/// The schema with its limits, before any state is attached.
pub fn schema_builder() -> SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot::default())
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_directives(MAX_DIRECTIVES_PER_FIELD)
}

/// The schema, serving from `state`: each request may hold at most
/// `state.connections_per_request()` pooled connections at once.
pub fn schema(state: AppState) -> TaskRunnerSchema {
    TaskRunnerSchema {
        connections_per_request: state.connections_per_request(),
        metrics: Arc::clone(state.metrics()),
        engine: schema_builder().data(state).finish(),
    }
}

/// The schema in SDL, as exported to `schema.graphql`.
pub fn sdl() -> String {
    schema_builder().finish().sdl()
}
