//! LISTEN/NOTIFY on a dedicated connection, outside the pool: wakes the claim
//! loop when a task becomes due, and passes on cancellations. If the
//! connection drops it is reopened (within two seconds of the server's
//! return); the claim loop's polling covers the gap, and a wake-up after
//! reconnecting covers what was missed.

use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::db;

/// The channel a NOTIFY names when a task becomes due.
pub const DUE_CHANNEL: &str = "taskrunner_task_due";
/// The channel a NOTIFY names, with the task id, when cancellation is asked for.
pub const CANCEL_CHANNEL: &str = "taskrunner_task_cancel";

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A task may be due: look for work (also sent after reconnecting).
    Due,
    /// Cancellation of this task was asked for.
    Cancel(i64),
}

/// The waits between attempts to reconnect: 250 ms doubling to 2 s, jittered.
fn reconnect_delays() -> impl Iterator<Item = Duration> {
    crate::db::retry_delays(Duration::from_millis(250), Duration::from_secs(2))
}

/// Listens until `stop` is cancelled. `ready` fires once the first LISTEN is
/// in place (or could not be), so that no notification is lost between it and
/// the first claim.
pub async fn listen(
    database_url: String,
    connect_timeout: Duration,
    on_notice: impl Fn(Notice) + Send + 'static,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let mut ready = Some(ready);
    let mut delays = reconnect_delays();
    while !stop.is_cancelled() {
        let connected = async {
            let mut conn = db::establish(&database_url, connect_timeout)
                .await
                .map_err(|e| e.to_string())?;
            conn.batch_execute(&format!("LISTEN {DUE_CHANNEL}; LISTEN {CANCEL_CHANNEL}"))
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
                tracing::warn!(%error, retry_in = ?delay, "cannot listen for task notifications; polling meanwhile");
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
        match ready.take() {
            Some(ready) => {
                let _ = ready.send(());
            }
            // Notifications may have been missed while reconnecting.
            None => {
                tracing::info!("listening for task notifications again");
                on_notice(Notice::Due);
            }
        }
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                notification = notifications.next() => match notification {
                    Some(Ok(notification)) if notification.channel == CANCEL_CHANNEL => {
                        if let Ok(id) = notification.payload.parse() {
                            on_notice(Notice::Cancel(id));
                        }
                    }
                    Some(Ok(_)) => on_notice(Notice::Due),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "task notification connection failed; reconnecting");
                        break;
                    }
                    None => {
                        tracing::warn!("task notification connection closed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
