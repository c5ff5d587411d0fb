//! Prometheus metrics: one registry per process, the metric families, and
//! small recording methods with typed arguments, so that no call site builds
//! a label by hand and no label can carry a prompt, an id or an error
//! message.
//!
//! Counters and histograms are recorded where things happen (a create, an
//! attempt, a provider call, a GraphQL request); none holds a lock across an
//! await. Gauges (pools, worker slots, the queue's counts) are sampled when
//! `/metrics` is scraped: the pools and slots from memory, the queue's counts
//! from one cached reading of the database ([`stats::StatsCache`]).
//!
//! `GET /metrics` answers in the OpenMetrics text format, which Prometheus
//! scrapes. Model names are label values only for the first
//! [`labels::MAX_MODEL_LABELS`] distinct names a process sees; later ones
//! are counted as `other`.

pub mod labels;
pub mod stats;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

use crate::db::DbPool;
use crate::tasks::TaskStatus;
pub use labels::{AttemptOutcome, OperationType, PoolName, ProviderOutcome};
use labels::{
    AttemptSeries, GraphqlSeries, ModelLabels, ModelSeries, OperationSeries, PoolSeries,
    ProviderNameSeries, ProviderSeries, StateSeries, StatusSeries, TokenSeries,
};

/// The content type of `/metrics`: the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of attempts and provider calls, in seconds: from a quick
/// answer to the longest attempt timeouts (minutes).
const ATTEMPT_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Upper bounds of queue waits, in seconds: milliseconds while workers keep
/// up, hours behind a backlog.
const QUEUE_WAIT_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
    14400.0,
];
/// Upper bounds of GraphQL requests, in seconds: milliseconds.
const GRAPHQL_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn attempt_histogram() -> Histogram {
    Histogram::new(ATTEMPT_BUCKETS)
}

fn queue_wait_histogram() -> Histogram {
    Histogram::new(QUEUE_WAIT_BUCKETS)
}

fn graphql_histogram() -> Histogram {
    Histogram::new(GRAPHQL_BUCKETS)
}

/// A model name as a label value, already capped: made by
/// [`Metrics::model_label`], so no call site passes a raw name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelLabel(String);

impl ModelLabel {
    /// The label value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the gauges are sampled from at scrape time.
#[derive(Default)]
struct Sources {
    pools: Vec<(PoolName, DbPool)>,
    /// Worker slots: the semaphore and how many permits it started with.
    slots: Vec<(Arc<Semaphore>, usize)>,
    /// The pool the queue's counts are read on (the API's, in `serve`).
    stats: Option<DbPool>,
}

/// The process's metrics. Build one per process and share it (`Arc`).
pub struct Metrics {
    registry: Registry,
    models: ModelLabels,
    tasks_created: Family<ModelSeries, Counter>,
    attempts: Family<AttemptSeries, Counter>,
    attempt_duration: HistogramFamily<ModelSeries>,
    queue_wait: HistogramFamily<ModelSeries>,
    tasks: Family<StatusSeries, Gauge>,
    oldest_pending_age: Gauge<f64, AtomicU64>,
    provider_requests: Family<ProviderSeries, Counter>,
    provider_duration: HistogramFamily<ProviderNameSeries>,
    tokens: Family<TokenSeries, Counter>,
    worker_slots: Family<StateSeries, Gauge>,
    db_connections: Family<PoolSeries, Gauge>,
    /// By operation type, then ok and error: made up front, so a request
    /// touches no map.
    graphql_requests: [[Counter; 2]; 4],
    graphql_duration: [Histogram; 4],
    stats: stats::StatsCache,
    sources: Mutex<Sources>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric family, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("taskrunner");
        let tasks_created = Family::<ModelSeries, Counter>::default();
        registry.register(
            "tasks_created",
            "Tasks created, by model",
            tasks_created.clone(),
        );
        let attempts = Family::<AttemptSeries, Counter>::default();
        registry.register(
            "task_attempts",
            "Attempts ended, by model and outcome (succeeded, retry, failed, cancelled, lost)",
            attempts.clone(),
        );
        let attempt_duration: HistogramFamily<ModelSeries> =
            Family::new_with_constructor(attempt_histogram);
        registry.register(
            "task_attempt_duration_seconds",
            "How long attempts ran, from claim to verdict, by model",
            attempt_duration.clone(),
        );
        let queue_wait: HistogramFamily<ModelSeries> =
            Family::new_with_constructor(queue_wait_histogram);
        registry.register(
            "task_queue_wait_seconds",
            "How long tasks waited from falling due to being claimed, by model",
            queue_wait.clone(),
        );
        let tasks = Family::<StatusSeries, Gauge>::default();
        registry.register(
            "tasks",
            "Tasks in the database, by status (read at most once a second)",
            tasks.clone(),
        );
        let oldest_pending_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_pending_age_seconds",
            "Seconds the longest-waiting due task has waited (0 when none waits)",
            oldest_pending_age.clone(),
        );
        let provider_requests = Family::<ProviderSeries, Counter>::default();
        registry.register(
            "provider_requests",
            "Calls to model providers, by provider and outcome",
            provider_requests.clone(),
        );
        let provider_duration: HistogramFamily<ProviderNameSeries> =
            Family::new_with_constructor(attempt_histogram);
        registry.register(
            "provider_request_duration_seconds",
            "How long calls to model providers took, by provider",
            provider_duration.clone(),
        );
        let tokens = Family::<TokenSeries, Counter>::default();
        registry.register(
            "tokens",
            "Tokens providers reported for answered attempts, by model and kind (prompt, completion)",
            tokens.clone(),
        );
        let worker_slots = Family::<StateSeries, Gauge>::default();
        registry.register(
            "worker_slots",
            "This process's worker slots, by state (busy, free)",
            worker_slots.clone(),
        );
        let db_connections = Family::<PoolSeries, Gauge>::default();
        registry.register(
            "db_connections",
            "Pooled database connections, by pool (api, queue) and state (in_use, idle, waiting: callers waiting for one)",
            db_connections.clone(),
        );
        let graphql_family = Family::<GraphqlSeries, Counter>::default();
        registry.register(
            "graphql_requests",
            "GraphQL operations, by operation type and outcome (error: the response has errors)",
            graphql_family.clone(),
        );
        let graphql_duration_family: HistogramFamily<OperationSeries> =
            Family::new_with_constructor(graphql_histogram);
        registry.register(
            "graphql_request_duration_seconds",
            "How long GraphQL operations took (a subscription: until its first response), by operation type",
            graphql_duration_family.clone(),
        );
        let stats_queries = Counter::default();
        registry.register(
            "metrics_stats_queries",
            "Times the queue's gauges were read from the database",
            stats_queries.clone(),
        );
        let graphql_requests = OperationType::ALL.map(|operation| {
            ["ok", "error"].map(|outcome| {
                graphql_family.get_or_create_owned(&GraphqlSeries {
                    operation_type: operation.as_str(),
                    outcome,
                })
            })
        });
        let graphql_duration = OperationType::ALL.map(|operation| {
            graphql_duration_family.get_or_create_owned(&OperationSeries {
                operation_type: operation.as_str(),
            })
        });
        Metrics {
            registry,
            models: ModelLabels::default(),
            tasks_created,
            attempts,
            attempt_duration,
            queue_wait,
            tasks,
            oldest_pending_age,
            provider_requests,
            provider_duration,
            tokens,
            worker_slots,
            db_connections,
            graphql_requests,
            graphql_duration,
            stats: stats::StatsCache::new(stats_queries),
            sources: Mutex::new(Sources::default()),
        }
    }

    /// `model` as a label value (capped: see [`labels::ModelLabels`]).
    pub fn model_label(&self, model: &str) -> ModelLabel {
        ModelLabel(self.models.label(model))
    }

    fn model_series(model: &ModelLabel) -> ModelSeries {
        ModelSeries {
            model: model.0.clone(),
        }
    }

    /// A task was created.
    pub fn task_created(&self, model: &str) {
        let model = self.model_label(model);
        self.tasks_created
            .get_or_create(&Self::model_series(&model))
            .inc();
    }

    /// A worker claimed a task that had been due for `waited`.
    pub fn task_claimed(&self, model: &ModelLabel, waited: Duration) {
        self.queue_wait
            .get_or_create(&Self::model_series(model))
            .observe(waited.as_secs_f64());
    }

    /// An attempt reached its verdict after `took`; `tokens` are the prompt
    /// and completion tokens of an answer, as its provider counted them.
    pub fn attempt_ran(
        &self,
        model: &ModelLabel,
        took: Duration,
        tokens: (Option<i32>, Option<i32>),
    ) {
        self.attempt_duration
            .get_or_create(&Self::model_series(model))
            .observe(took.as_secs_f64());
        for (kind, count) in [("prompt", tokens.0), ("completion", tokens.1)] {
            if let Some(count) = count.and_then(|n| u64::try_from(n).ok()) {
                self.tokens
                    .get_or_create(&labels::TokenSeries {
                        model: model.0.clone(),
                        kind,
                    })
                    .inc_by(count);
            }
        }
    }

    /// An attempt's outcome was stored (or, for [`AttemptOutcome::Lost`],
    /// its task rescued).
    pub fn attempt_ended(&self, model: &ModelLabel, outcome: AttemptOutcome) {
        self.attempts
            .get_or_create(&AttemptSeries {
                model: model.0.clone(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// A call to the provider named `provider` (a configured name) ended.
    pub fn provider_request(&self, provider: &str, outcome: ProviderOutcome, took: Duration) {
        self.provider_requests
            .get_or_create(&ProviderSeries {
                provider: provider.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
        self.provider_duration
            .get_or_create(&ProviderNameSeries {
                provider: provider.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// A GraphQL operation was answered (a subscription: started), with
    /// errors or without, after `took`.
    pub fn graphql_request(&self, operation: OperationType, had_errors: bool, took: Duration) {
        let index = match operation {
            OperationType::Query => 0,
            OperationType::Mutation => 1,
            OperationType::Subscription => 2,
            OperationType::Unknown => 3,
        };
        self.graphql_requests[index][usize::from(had_errors)].inc();
        self.graphql_duration[index].observe(took.as_secs_f64());
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports `pool`'s connections as `taskrunner_db_connections{pool=name}`.
    pub fn watch_pool(&self, name: PoolName, pool: DbPool) {
        self.sources().pools.push((name, pool));
    }

    /// Reports a worker's `slots` (of `total`) as `taskrunner_worker_slots`.
    pub fn watch_slots(&self, slots: Arc<Semaphore>, total: usize) {
        self.sources().slots.push((slots, total));
    }

    /// Reports the queue's counts, read on `pool`, as `taskrunner_tasks` and
    /// `taskrunner_oldest_pending_age_seconds`.
    pub fn watch_queue_stats(&self, pool: DbPool) {
        self.sources().stats = Some(pool);
    }

    /// Samples the gauges, then encodes every metric in the OpenMetrics text
    /// format ([`CONTENT_TYPE`]).
    pub async fn render(&self) -> String {
        let stats_pool = self.sources().stats.clone();
        if let Some(pool) = stats_pool
            && let Some(stats) = self.stats.get(&pool).await
        {
            for status in TaskStatus::ALL {
                self.tasks
                    .get_or_create(&StatusSeries {
                        status: labels::status_label(status),
                    })
                    .set(stats.count(status));
            }
            self.oldest_pending_age
                .set(stats.oldest_due_age_seconds.unwrap_or(0.0));
        }
        self.sample_memory();
        let mut text = String::with_capacity(8 * 1024);
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "could not encode the metrics");
        }
        text
    }

    /// Sets the gauges read from this process's own state: pools and slots.
    fn sample_memory(&self) {
        let sources = self.sources();
        for (name, pool) in &sources.pools {
            let status = pool.status();
            let idle = status.available;
            let in_use = status.size.saturating_sub(idle);
            for (state, value) in [
                ("in_use", in_use),
                ("idle", idle),
                ("waiting", status.waiting),
            ] {
                self.db_connections
                    .get_or_create(&PoolSeries {
                        pool: name.as_str(),
                        state,
                    })
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        if !sources.slots.is_empty() {
            let (total, free) =
                sources
                    .slots
                    .iter()
                    .fold((0, 0), |(total, free), (slots, size)| {
                        (total + size, free + slots.available_permits().min(*size))
                    });
            for (state, value) in [("busy", total - free), ("free", free)] {
                self.worker_slots
                    .get_or_create(&StateSeries { state })
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
    }
}
