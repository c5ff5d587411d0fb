//! The worker's output writer: sends its attempts' new text to the API
//! processes, and saves their text so far, on a connection of its own.
//!
//! - **Sending**: within 50 ms of new text (at once for an attempt's first
//!   text, 4 KiB, or its end), one statement NOTIFYs the unsent text of every
//!   running attempt, in pieces that fit a payload. One connection sends, one
//!   statement at a time, so each attempt's pieces reach every listener in
//!   order. What comes while a statement runs waits for the next, which
//!   carries more: sending falls behind by coalescing, never by holding up
//!   an attempt. A failed send is sent again.
//! - **Saving**: about once a second, one statement saves the text so far of
//!   every attempt whose text grew, and removes the rows of attempts whose
//!   outcome is stored. Once a minute, rows left by lost workers are swept.
//!
//! Its own connection, not the queue's pool: it sends up to twenty times a
//! second while answers stream, and must neither wait behind nor delay the
//! heartbeat and the claims. Its saves commit without waiting for the disk
//! (`synchronous_commit = off`): a saved text so far is lost with its attempt
//! in a crash anyway, and the save must not wait behind a WAL flush. If the connection is lost, text waits in the
//! book (bounded by each attempt's answer cap) until it is back.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::output::book::OutputBook;
use crate::output::store;

/// How long new text waits for more before it is sent.
pub const COALESCE: Duration = Duration::from_millis(50);
/// How often the text so far is saved.
pub const SAVE_PERIOD: Duration = Duration::from_secs(1);
/// How often rows left by lost workers are swept.
const SWEEP_PERIOD: Duration = Duration::from_secs(60);
/// About the most payload bytes one statement sends; the rest goes next.
const STATEMENT_BYTES: usize = 256 * 1024;
/// How long the last send and save may take once the worker stops.
const LAST_WRITE: Duration = Duration::from_secs(1);

/// Where and how the writer connects.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub database_url: String,
    /// The worker whose attempts these are (saves are fenced by it).
    pub worker_id: String,
    /// The longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// The longest one statement may take.
    pub statement_timeout: Duration,
}

/// The writer's connection, opened when needed.
struct Connection {
    config: WriterConfig,
    conn: Option<AsyncPgConnection>,
    /// No connection attempt before this instant (after a failed one).
    retry_at: Option<Instant>,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    /// The last statement failed: the next failures are logged quietly.
    failing: bool,
}

/// Writes until `stop` is cancelled, then makes a last, bounded write.
pub async fn run(book: Arc<OutputBook>, config: WriterConfig, stop: CancellationToken) {
    let mut connection = Connection::new(config);
    let mut next_save = Instant::now() + SAVE_PERIOD;
    let mut next_sweep = Instant::now() + SWEEP_PERIOD;
    loop {
        tokio::select! {
            () = book.pending.notified() => {
                tokio::select! {
                    () = tokio::time::sleep(COALESCE) => {}
                    () = book.urgent.notified() => {}
                    () = stop.cancelled() => {}
                }
                send(&book, &mut connection).await;
            }
            () = tokio::time::sleep_until(next_save) => {
                next_save = Instant::now() + SAVE_PERIOD;
                let sweep = Instant::now() >= next_sweep;
                if sweep {
                    next_sweep = Instant::now() + SWEEP_PERIOD;
                }
                // Also sends what a failed send left behind.
                send(&book, &mut connection).await;
                save(&book, &mut connection, sweep).await;
            }
            () = stop.cancelled() => {
                let last = async {
                    send(&book, &mut connection).await;
                    save(&book, &mut connection, false).await;
                };
                let _ = tokio::time::timeout(LAST_WRITE, last).await;
                return;
            }
        }
    }
}

/// Sends every attempt's unsent text (a statement at a time).
async fn send(book: &OutputBook, connection: &mut Connection) {
    let unsent = book.unsent(STATEMENT_BYTES);
    if unsent.payloads.is_empty() {
        return;
    }
    let timeout = connection.config.statement_timeout;
    let sent = match connection.open().await {
        Ok(conn) => within(timeout, store::notify(conn, &unsent.payloads)).await,
        Err(error) => Err(error),
    };
    if connection
        .check(
            sent,
            "could not send answers' text to the API processes; sending it later",
        )
        .is_some()
    {
        book.sent(&unsent);
    }
}

/// Saves running attempts' text so far and removes settled attempts' rows.
async fn save(book: &OutputBook, connection: &mut Connection, sweep: bool) {
    let unsaved = book.unsaved();
    let timeout = connection.config.statement_timeout;
    let worker_id = connection.config.worker_id.clone();
    if !unsaved.rows.is_empty() || !unsaved.gone.is_empty() {
        let saved = match connection.open().await {
            Ok(conn) => {
                within(
                    timeout,
                    store::save(conn, &worker_id, &unsaved.rows, &unsaved.gone),
                )
                .await
            }
            Err(error) => Err(error),
        };
        if connection
            .check(saved, "could not save answers' text so far")
            .is_some()
        {
            book.saved(&unsaved);
        }
    }
    if sweep {
        let swept = match connection.open().await {
            Ok(conn) => within(timeout, store::sweep(conn)).await,
            Err(error) => Err(error),
        };
        if let Some(swept) =
            connection.check(swept, "could not sweep the saved text of lost attempts")
            && swept > 0
        {
            tracing::info!(swept, "removed saved text of attempts no worker runs");
        }
    }
}

/// Runs a statement within `timeout`.
async fn within<T>(
    timeout: Duration,
    statement: impl Future<Output = diesel::QueryResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, statement).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("the database did not answer within {timeout:?}")),
    }
}

impl Connection {
    fn new(config: WriterConfig) -> Self {
        Connection {
            config,
            conn: None,
            retry_at: None,
            delays: Box::new(reconnect_delays()),
            failing: false,
        }
    }

    /// Notes how a statement went: a failure is logged (a warning for the
    /// first of a run, then quietly) and drops the connection, so the next
    /// statement opens a fresh one (ours fail only when the database does).
    fn check<T>(&mut self, outcome: Result<T, String>, what: &str) -> Option<T> {
        match outcome {
            Ok(done) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!("sending and saving answers' text again");
                }
                Some(done)
            }
            Err(error) => {
                if self.failing {
                    tracing::debug!(%error, "{what}");
                } else {
                    tracing::warn!(%error, "{what}");
                }
                self.failing = true;
                self.conn = None;
                None
            }
        }
    }

    /// The open connection, or a new one (not before the retry delay).
    async fn open(&mut self) -> Result<&mut AsyncPgConnection, String> {
        if self.conn.is_none() {
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                return Err("the database was unreachable a moment ago".to_owned());
            }
            match Connection::establish(&self.config).await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.retry_at = None;
                    self.delays = Box::new(reconnect_delays());
                }
                Err(error) => {
                    let delay = self.delays.next().unwrap_or(Duration::from_secs(2));
                    self.retry_at = Some(Instant::now() + delay);
                    return Err(error);
                }
            }
        }
        self.conn.as_mut().ok_or_else(|| "no connection".to_owned())
    }

    async fn establish(config: &WriterConfig) -> Result<AsyncPgConnection, String> {
        let mut conn = db::establish(&config.database_url, config.connect_timeout)
            .await
            .map_err(|e| e.to_string())?;
        // A saved text so far is not worth waiting for the disk: a crash
        // loses the attempt it belongs to anyway.
        conn.batch_execute(&format!(
            "SET statement_timeout = {}; SET synchronous_commit = off",
            config.statement_timeout.as_millis()
        ))
        .await
        .map_err(|e| e.to_string())?;
        Ok(conn)
    }
}

/// The waits between attempts to reconnect: 250 ms doubling to 2 s, jittered.
fn reconnect_delays() -> impl Iterator<Item = Duration> + Send {
    db::retry_delays(Duration::from_millis(250), Duration::from_secs(2))
}
