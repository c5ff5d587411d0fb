//! LISTEN/NOTIFY on a dedicated connection, outside the pool: wakes the claim
//! loop when a task becomes due, and passes on cancellations. If the
//! connection drops it is reopened; the claim loop's polling covers the gap.

use std::sync::Arc;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot, watch};

use crate::db;

/// The channel a NOTIFY names when a task becomes due.
pub const DUE_CHANNEL: &str = "taskrunner_task_due";
/// The channel a NOTIFY names, with the task id, when cancellation is asked for.
pub const CANCEL_CHANNEL: &str = "taskrunner_task_cancel";

/// Listens until `stop` turns true. `ready` fires once the first LISTEN is in
/// place (or could not be), so that no notification is lost between it and
/// the first claim.
pub async fn listen(
    database_url: String,
    connect_timeout: Duration,
    wake: Arc<Notify>,
    on_cancel: impl Fn(i64) + Send + 'static,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = Some(ready);
    let mut delay = Duration::from_millis(250);
    while !*stop.borrow() {
        let connected = async {
            let mut conn = db::establish(&database_url, connect_timeout)
                .await
                .map_err(|e| e.to_string())?;
            conn.batch_execute(&format!("LISTEN {DUE_CHANNEL}; LISTEN {CANCEL_CHANNEL}"))
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(conn)
        }
        .await;
        let mut conn = match connected {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for task notifications; polling meanwhile");
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        delay = Duration::from_millis(250);
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        } else {
            // Notifications may have been missed while reconnecting.
            wake.notify_one();
        }
        tracing::debug!("listening for task notifications");
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                notification = notifications.next() => match notification {
                    Some(Ok(notification)) if notification.channel == CANCEL_CHANNEL => {
                        if let Ok(id) = notification.payload.parse() {
                            on_cancel(id);
                        }
                    }
                    Some(Ok(_)) => wake.notify_one(),
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
