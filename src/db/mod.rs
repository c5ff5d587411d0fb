//! Storage plumbing: the connection pool, start-up (choose the server or run
//! a private one, reach it, create the database, migrate), and the diesel schema.

mod bootstrap;
pub mod connect;
pub mod embedded;
pub mod migrations;
pub mod schema;
pub mod tls;

use std::time::Duration;

use anyhow::Context;
use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use diesel_async::SimpleAsyncConnection;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};

pub use bootstrap::{prepare_database, redact_url};
pub use connect::{ConnectError, ConnectOptions, DatabaseUrlError};

use crate::config::DatabaseArgs;

/// The pool of database connections shared by the whole process.
pub type DbPool = Pool<AsyncPgConnection>;
/// A connection borrowed from the pool; it goes back when dropped.
pub type DbConn = Object<AsyncPgConnection>;

/// Builds the API's connection pool. Connections open lazily, on first use.
///
/// Every wait is bounded by the configured timeout, so a request made while
/// the database is unreachable fails within seconds instead of hanging, and
/// every statement by the statement timeout.
pub fn build_pool(args: &DatabaseArgs) -> anyhow::Result<DbPool> {
    pool(args, args.db_pool_size, "")
}

/// Builds a pool of one connection for readiness checks, so that probes
/// never take a connection the queue needs for a heartbeat.
pub fn build_probe_pool(args: &DatabaseArgs) -> anyhow::Result<DbPool> {
    pool(args, 1, "")
}

/// Builds the queue's own pool (claims, heartbeats, outcomes, rescues), kept
/// apart from the API's so that no request load can delay a heartbeat.
///
/// Its connections plan without sequential scans, bitmap scans or sorts:
/// every queue statement is written to walk an index in its order and stop
/// early (the claim reads the head of one range per priority). A queue
/// table's statistics swing with every burst (mid-drain, ANALYZE sees few
/// pending rows among many finished ones), and with them the planner chose to
/// read every due task and sort them, once per priority, on every claim:
/// several times slower, and worse the longer the backlog. (A statement that
/// has no other way, like folding the counters, still scans or sorts; JIT is
/// off, as the penalty that steers the planner would otherwise make such a
/// statement look expensive enough to compile, which took 50–100 ms.)
pub fn build_queue_pool(args: &DatabaseArgs) -> anyhow::Result<DbPool> {
    pool(
        args,
        args.db_queue_pool_size,
        "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off; \
         SET enable_incremental_sort = off; SET jit = off;",
    )
}

fn pool(args: &DatabaseArgs, size: u16, setup: &'static str) -> anyhow::Result<DbPool> {
    let timeout = args.timeout();
    let statement_timeout = args.statement_timeout();
    // Read once: every connection of the pool opens with the same settings.
    let options =
        std::sync::Arc::new(ConnectOptions::parse(&args.database_url).with_context(|| {
            format!(
                "DATABASE_URL {} cannot be used",
                redact_url(&args.database_url)
            )
        })?);
    let mut config = ManagerConfig::<AsyncPgConnection>::default();
    // A broken connection is noticed when it is used (and dropped then); a
    // test query on every checkout would double the round trips of a request.
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |_url| {
        let options = std::sync::Arc::clone(&options);
        Box::pin(async move {
            let mut conn = options.establish(timeout).await?;
            conn.batch_execute(&format!(
                "SET statement_timeout = {}; {setup}",
                statement_timeout.as_millis()
            ))
            .await
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::new_with_config(&args.database_url, config);
    Ok(Pool::builder(manager)
        .max_size(usize::from(size))
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()?)
}

/// The waits between tries of a database step that keeps failing: from `min`
/// doubling to `max`, jittered so that processes cut off together do not all
/// come back at the same instant.
pub(crate) fn retry_delays(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Opens one connection to `url` (with TLS as its `sslmode` asks), giving
/// up after `timeout`. The URL is read anew each time; the pool reads it once.
pub async fn establish(url: &str, timeout: Duration) -> Result<AsyncPgConnection, ConnectionError> {
    let options = ConnectOptions::parse(url)
        .map_err(|e| ConnectionError::InvalidConnectionUrl(e.to_string()))?;
    options.establish(timeout).await
}

/// Whether the connection or the server went away under a statement: the
/// connection closed, or the server ended the session (a restart, a failover,
/// an administrator). diesel reports the latter (SQLSTATE 57P01–57P03) as
/// `Unknown`, so their messages are the only sign.
pub fn is_connection_lost(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        ) => true,
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let message = info.message();
            message.starts_with("terminating connection")
                || message.starts_with("the database system is")
                || message.contains("connection closed")
        }
        _ => false,
    }
}

/// Whether PostgreSQL stopped a statement that ran past `statement_timeout`
/// (SQLSTATE 57014). diesel-async keeps no SQLSTATE, and a cancelled
/// statement is `Unknown` (matched as any kind, in case a later diesel names
/// it): only PostgreSQL's message tells a statement timeout from other
/// cancellations. The text is fixed in PostgreSQL's source, but translated
/// when the server's `lc_messages` is not English.
pub fn is_statement_timeout(error: &diesel::result::Error) -> bool {
    matches!(error, diesel::result::Error::DatabaseError(_, info)
        if info.message() == "canceling statement due to statement timeout")
}

/// Whether a statement failed for a reason that has nothing to do with the
/// rows it touched: the connection or the server went away, the statement ran
/// out of time, or it lost a race it may win on a second try (serialization,
/// deadlock). Such a failure is retried as it is; any other failure of a
/// batch statement is blamed on its rows, and the batch is split to find the
/// one at fault.
pub fn is_transient(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    is_connection_lost(error)
        || is_statement_timeout(error)
        || matches!(
            error,
            Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
        )
        || matches!(error, Error::DatabaseError(DatabaseErrorKind::Unknown, info)
            if info.message().starts_with("deadlock detected"))
}
