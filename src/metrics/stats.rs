//! The queue's gauges (`taskrunner_tasks{status}`,
//! `taskrunner_oldest_pending_age_seconds`), read from the database at most
//! once a second however often and however many at once scrape.

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::db::DbPool;
use crate::tasks::store::{self, Stats};

/// How long one reading of the stats serves scrapes.
pub const STATS_MAX_AGE: Duration = Duration::from_secs(1);

/// The longest a scrape waits for the stats query; past it the scrape
/// answers with the last values read.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// The last reading of `tasks::store::stats`, shared by every scrape. The
/// first scrape after it is a second old reads again while the others wait
/// for its answer, so N scrapes at once cost one query.
#[derive(Debug, Default)]
pub struct StatsCache {
    last: tokio::sync::Mutex<Option<(Instant, Option<Stats>)>>,
    /// Counts the readings (`taskrunner_metrics_stats_queries_total`).
    queries: Counter,
}

impl StatsCache {
    /// A cache that counts its readings in `queries`.
    pub fn new(queries: Counter) -> Self {
        StatsCache {
            last: tokio::sync::Mutex::new(None),
            queries,
        }
    }

    /// The stats at most [`STATS_MAX_AGE`] old, read on `pool` if need be;
    /// `None` when the last try to read them failed.
    pub async fn get(&self, pool: &DbPool) -> Option<Stats> {
        // The lock is held across the query on purpose: scrapes that arrive
        // meanwhile wait for this answer instead of asking again.
        let mut last = self.last.lock().await;
        if let Some((read_at, stats)) = &*last
            && read_at.elapsed() < STATS_MAX_AGE
        {
            return stats.clone();
        }
        self.queries.inc();
        let read = async {
            let mut conn = pool.get().await.map_err(|e| e.to_string())?;
            store::stats(&mut conn, &crate::tasks::Scope::All)
                .await
                .map_err(|e| e.to_string())
        };
        let stats = match tokio::time::timeout(STATS_TIMEOUT, read).await {
            Ok(Ok(stats)) => Some(stats),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not read the queue's stats for /metrics");
                None
            }
            Err(_) => {
                tracing::warn!(timeout = ?STATS_TIMEOUT, "the queue's stats for /metrics took too long");
                None
            }
        };
        *last = Some((Instant::now(), stats.clone()));
        stats
    }
}
