//! `wait_for_task`: the task as soon as it is final, or as it stands when the
//! time is up, driven by the event backbone (no polling). While it waits it
//! sends progress notifications, if the client gave a progress token: one at
//! the start, one on each change of status, and one every few seconds, so a
//! client can show that the task is alive (and reset its own timeout).

use std::sync::Arc;
use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RequestContext};
use tokio::time::{Instant, MissedTickBehavior};

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::events::Watched;
use crate::service;
use crate::tasks::Task;
use crate::tasks::validation::parse_task_id;

/// How long `wait_for_task` waits unless told otherwise, in seconds.
pub const DEFAULT_WAIT_SECONDS: i32 = 60;
/// The longest `wait_for_task` may wait, in seconds: a longer call would
/// outlast the patience of most clients and proxies.
pub const MAX_WAIT_SECONDS: i32 = 600;
/// How often a waiting call reports that it is still waiting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Waits for task `id` to reach a final status (SUCCEEDED, FAILED,
/// CANCELLED) for at most `timeout_seconds`, and returns it as it then is.
/// NOT_FOUND if it does not exist or is deleted meanwhile. Stops early, with
/// the task as it stands, when the call is cancelled (the client gave up, or
/// the server is shutting down).
pub async fn wait_for_task(
    state: &AppState,
    principal: &Principal,
    id: &str,
    timeout_seconds: Option<i32>,
    request: &RequestContext<RoleServer>,
) -> Result<Task, ApiError> {
    let task_id = parse_task_id(id)?;
    let within = wait_limit(timeout_seconds)?;
    let deadline = Instant::now() + within;
    // Watch before reading, so no change between the two is missed.
    let mut watch = state.events().watch_task(task_id);
    let mut task = service::get_task(state, principal, id).await?;
    let mut progress = Progress::new(request, within);
    if !task.status.is_final() {
        progress.report(&task).await;
    }
    let mut heartbeat = tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    while !task.status.is_final() {
        tokio::select! {
            changed = watch.next() => match changed {
                Some(Watched::Current(latest)) => {
                    // The hub may hold a state older than the one read at the start.
                    if latest.updated_at < task.updated_at {
                        continue;
                    }
                    let moved = latest.status != task.status;
                    task = Arc::unwrap_or_clone(latest);
                    if moved && !task.status.is_final() {
                        progress.report(&task).await;
                    }
                }
                Some(Watched::Deleted(_)) => return Err(ApiError::NotFound(task_id)),
                // The hub stopped: the process is shutting down.
                None => break,
            },
            _ = heartbeat.tick() => progress.report(&task).await,
            () = tokio::time::sleep_until(deadline) => break,
            () = request.ct.cancelled() => break,
        }
    }
    Ok(task)
}

/// The wait `timeout_seconds` asks for: 0 to [`MAX_WAIT_SECONDS`], by default
/// [`DEFAULT_WAIT_SECONDS`].
fn wait_limit(timeout_seconds: Option<i32>) -> Result<Duration, ApiError> {
    let seconds = timeout_seconds.unwrap_or(DEFAULT_WAIT_SECONDS);
    if (0..=MAX_WAIT_SECONDS).contains(&seconds) {
        Ok(Duration::from_secs(u64::from(seconds.unsigned_abs())))
    } else {
        Err(ApiError::bad_input(
            "timeoutSeconds",
            format!("must be between 0 and {MAX_WAIT_SECONDS}, got {seconds}"),
        ))
    }
}

/// Progress notifications for one call, if its client asked for them: the
/// seconds waited so far out of the most it will wait, and where the task is.
struct Progress {
    to: Option<(Peer<RoleServer>, ProgressToken)>,
    started: Instant,
    total: f64,
    /// The last progress sent: each must be greater than the one before.
    last: f64,
}

impl Progress {
    fn new(request: &RequestContext<RoleServer>, within: Duration) -> Self {
        let token = request.meta.get_progress_token();
        Progress {
            to: token.map(|token| (request.peer.clone(), token)),
            started: Instant::now(),
            total: within.as_secs_f64(),
            last: -1.0,
        }
    }

    async fn report(&mut self, task: &Task) {
        let Some((peer, token)) = &self.to else {
            return;
        };
        let waited = self.started.elapsed().as_secs_f64();
        // A strictly increasing value, even for two reports in one instant.
        let progress = waited.max(self.last + 0.001);
        self.last = progress;
        let status = task.status.as_str().to_uppercase();
        let message = format!(
            "task {} is {status} (attempt {} of {})",
            task.id, task.attempts, task.max_attempts
        );
        let param = ProgressNotificationParam::new(token.clone(), progress)
            .with_total(self.total)
            .with_message(message);
        if let Err(error) = peer.notify_progress(param).await {
            // The client went away; the call ends with it.
            tracing::debug!(%error, "could not send a progress notification");
        }
    }
}
