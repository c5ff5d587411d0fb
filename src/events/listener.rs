//! The process's one LISTEN connection, outside every pool. Whoever needs
//! notifications (the worker's wake-ups and cancellations, the API's task
//! events) registers a handler for its channel; the channels are fixed when
//! the listener starts, so a process hears only what it needs.
//!
//! If the connection drops it is reopened (within two seconds of the
//! server's return), and every handler hears [`Heard::Reconnected`]:
//! notifications may have been missed meanwhile, so each re-reads what it
//! keeps (the claim loop looks for work; subscribers re-read their tasks).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::db;

/// What a handler hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard<'a> {
    /// A notification on the handler's channel, with its payload.
    Payload(&'a str),
    /// The connection was reopened: notifications may have been missed.
    Reconnected,
}

type Handler = Arc<dyn Fn(Heard<'_>) + Send + Sync>;

/// A handle to the listening connection; cheap to clone. It listens until the
/// token given to [`Listener::start`] is cancelled.
#[derive(Clone)]
pub struct Listener {
    channels: Arc<Vec<&'static str>>,
    handlers: Arc<RwLock<HashMap<&'static str, Vec<Handler>>>>,
    /// Whether LISTEN is in place now (a worker is not ready without it).
    connected: Arc<AtomicBool>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

/// The waits between attempts to reconnect: 250 ms doubling to 2 s, jittered.
fn reconnect_delays() -> impl Iterator<Item = Duration> {
    crate::db::retry_delays(Duration::from_millis(250), Duration::from_secs(2))
}

impl Listener {
    /// Opens the connection and LISTENs on `channels`. Returns once LISTEN is
    /// in place or could not be (then it keeps trying in the background, and
    /// its users poll meanwhile); either way within the connect timeout.
    pub async fn start(
        database_url: String,
        connect_timeout: Duration,
        channels: Vec<&'static str>,
        stop: CancellationToken,
    ) -> Listener {
        let listener = Listener {
            channels: Arc::new(channels),
            handlers: Arc::new(RwLock::new(HashMap::new())),
            connected: Arc::new(AtomicBool::new(false)),
        };
        let (ready, listening) = oneshot::channel();
        tokio::spawn(
            listener
                .clone()
                .run(database_url, connect_timeout, ready, stop),
        );
        let _ = listening.await;
        listener
    }

    /// Calls `handler` with every notification on `channel` (which must be one
    /// the listener was started with) and after every reconnection. Handlers
    /// run on the listener's task: they must be quick and never block.
    pub fn on(&self, channel: &'static str, handler: impl Fn(Heard<'_>) + Send + Sync + 'static) {
        debug_assert!(
            self.channels.contains(&channel),
            "the listener does not listen on {channel}"
        );
        self.handlers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(channel)
            .or_default()
            .push(Arc::new(handler));
    }

    /// Whether the connection is open and listening now. While it is not,
    /// notifications are missed (the process's users poll meanwhile).
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Whether the listener was started with `channel`.
    pub fn listens_on(&self, channel: &str) -> bool {
        self.channels.contains(&channel)
    }

    fn dispatch(&self, channel: Option<&str>, heard: Heard<'_>) {
        let handlers = self
            .handlers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (name, handlers) in handlers.iter() {
            if channel.is_none_or(|channel| channel == *name) {
                for handler in handlers {
                    handler(heard);
                }
            }
        }
    }

    async fn run(
        self,
        database_url: String,
        connect_timeout: Duration,
        ready: oneshot::Sender<()>,
        stop: CancellationToken,
    ) {
        let mut ready = Some(ready);
        let mut delays = reconnect_delays();
        let listen = self
            .channels
            .iter()
            .map(|channel| format!("LISTEN {channel};"))
            .collect::<String>();
        while !stop.is_cancelled() {
            let connected = async {
                let mut conn = db::establish(&database_url, connect_timeout)
                    .await
                    .map_err(|e| e.to_string())?;
                conn.batch_execute(&listen)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(conn)
            };
            let connected = tokio::select! {
                connected = connected => connected,
                () = stop.cancelled() => return,
            };
            let mut conn = match connected {
                Ok(conn) => conn,
                Err(error) => {
                    let delay = delays.next().unwrap_or(Duration::from_secs(2));
                    tracing::warn!(%error, retry_in = ?delay, "cannot listen for notifications; polling meanwhile");
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return,
                    }
                    continue;
                }
            };
            delays = reconnect_delays();
            self.connected.store(true, Ordering::Relaxed);
            match ready.take() {
                Some(ready) => {
                    let _ = ready.send(());
                }
                None => {
                    tracing::info!("listening for notifications again");
                    self.dispatch(None, Heard::Reconnected);
                }
            }
            let mut notifications = std::pin::pin!(conn.notifications_stream());
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    notification = notifications.next() => match notification {
                        Some(Ok(notification)) => self.dispatch(
                            Some(&notification.channel),
                            Heard::Payload(&notification.payload),
                        ),
                        Some(Err(error)) => {
                            tracing::warn!(%error, "notification connection failed; reconnecting");
                            break;
                        }
                        None => {
                            tracing::warn!("notification connection closed; reconnecting");
                            break;
                        }
                    }
                }
            }
            self.connected.store(false, Ordering::Relaxed);
        }
    }
}
