//! The state every request handler shares.

use std::sync::Arc;

use crate::config::DatabaseArgs;
use crate::db::{self, DbConn, DbPool};
use crate::error::ApiError;
use crate::events::{ChangePublisher, EventHub, Listener, TaskEventType};
use crate::metrics::{Metrics, PoolName};
use crate::output::{OUTPUT_CHANNEL, OutputHub};
use crate::providers::routing::{ModelRouter, Unroutable};
use crate::tenants::LimitCache;

/// What the API needs to answer a request: the database pool, the model
/// routes, the event backbone (announcing changes, hearing them for
/// subscribers), and the answers being written (for `taskOutput`). Cheap to
/// clone; clones share all of it.
#[derive(Clone)]
pub struct AppState {
    pool: DbPool,
    router: Arc<ModelRouter>,
    changes: ChangePublisher,
    events: EventHub,
    output: OutputHub,
    metrics: Arc<Metrics>,
    tenant_limits: Arc<LimitCache>,
    connections_per_request: usize,
}

/// The most pooled connections one GraphQL request may hold at once, unless
/// configured otherwise (`--db-connections-per-request`).
pub const DEFAULT_CONNECTIONS_PER_REQUEST: usize = 2;

impl AppState {
    /// State around an existing pool and router (starts the change publisher
    /// and the event hub, so call it inside the runtime), with the default
    /// connection cap per request. Subscribers hear changes once the state is
    /// given a listener ([`AppState::listen_on`]).
    pub fn new(pool: DbPool, router: Arc<ModelRouter>) -> Self {
        AppState::measured(pool, router, Arc::new(Metrics::new()))
    }

    /// Like [`AppState::new`], recording into `metrics` (the process's one
    /// registry): the pool's connections, and the queue's counts read on it.
    pub fn measured(pool: DbPool, router: Arc<ModelRouter>, metrics: Arc<Metrics>) -> Self {
        metrics.watch_pool(PoolName::Api, pool.clone());
        metrics.watch_queue_stats(pool.clone());
        let changes = ChangePublisher::start(pool.clone());
        let events = EventHub::start(pool.clone());
        let output = OutputHub::start(pool.clone());
        AppState {
            pool,
            router,
            changes,
            events,
            output,
            metrics,
            tenant_limits: Arc::default(),
            connections_per_request: DEFAULT_CONNECTIONS_PER_REQUEST,
        }
    }

    /// The same state with at most `n` pooled connections per GraphQL request
    /// (at least one: a request with none could never be answered).
    #[must_use]
    pub fn with_connections_per_request(mut self, n: usize) -> Self {
        self.connections_per_request = n.max(1);
        self
    }

    /// The most pooled connections one GraphQL request may hold at once, so
    /// that no single request (however many fields it has) can take the pool.
    pub fn connections_per_request(&self) -> usize {
        self.connections_per_request
    }

    /// Wakes idle workers: call once a task that is due now has committed.
    pub fn announce_due_task(&self) {
        self.changes.task_due();
    }

    /// Announces a change to a task to every process's subscribers: call once
    /// it has committed. Never waits.
    pub fn publish(&self, kind: TaskEventType, task_id: i64) {
        self.changes.publish(kind, task_id);
    }

    /// Announces the same change to several tasks, as [`AppState::publish`].
    pub fn publish_all(&self, kind: TaskEventType, task_ids: impl IntoIterator<Item = i64>) {
        self.changes.publish_all(kind, task_ids);
    }

    /// Waits, at most `within`, until every change published has been sent.
    pub async fn flush_events(&self, within: std::time::Duration) {
        self.changes.flush(within).await;
    }

    /// The hub subscribers watch tasks through.
    pub fn events(&self) -> &EventHub {
        &self.events
    }

    /// Which tenants have no quota, as read in the last second.
    pub fn tenant_limits(&self) -> &LimitCache {
        &self.tenant_limits
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The hub that keeps the answers being written, for `taskOutput`.
    pub fn output(&self) -> &OutputHub {
        &self.output
    }

    /// Lets subscribers hear the changes `listener` hears (it must listen on
    /// [`crate::events::EVENTS_CHANNEL`]), and the answers being written if it
    /// listens on [`OUTPUT_CHANNEL`].
    pub fn listen_on(&self, listener: &Listener) {
        self.events.listen_on(listener);
        if listener.listens_on(OUTPUT_CHANNEL) {
            self.output.listen_on(listener);
        }
    }

    /// Prepares the database (create, migrate) and builds the pool.
    pub async fn connect(args: &DatabaseArgs, router: Arc<ModelRouter>) -> anyhow::Result<Self> {
        db::prepare_database(args).await?;
        Ok(AppState::new(db::build_pool(args)?, router)
            .with_connections_per_request(usize::from(args.db_connections_per_request)))
    }

    /// A pooled connection, or SERVICE_UNAVAILABLE within the pool's timeout.
    /// GraphQL resolvers take theirs through `graphql::budget::connection`
    /// instead, which keeps to the request's share of the pool.
    pub async fn db(&self) -> Result<DbConn, ApiError> {
        Ok(self.pool.get().await?)
    }

    /// The connection pool.
    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Which provider serves which model.
    pub fn router(&self) -> &Arc<ModelRouter> {
        &self.router
    }

    /// Whether a task for `model` can run: BAD_USER_INPUT (on `model`) if no
    /// provider serves it, PROVIDER_UNAVAILABLE if the provider that would
    /// refused to list its models (its key is wrong: every call would fail).
    pub fn check_model_is_served(&self, model: &str) -> Result<(), ApiError> {
        match self.router.route(model) {
            Ok(_) => Ok(()),
            Err(Unroutable::NoProvider { message, .. }) => {
                Err(ApiError::bad_input("model", message))
            }
            Err(refused @ Unroutable::ProviderRefused { .. }) => {
                Err(ApiError::ProviderUnavailable {
                    message: refused.message(),
                })
            }
        }
    }
}
