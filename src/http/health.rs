//! Liveness and readiness, for load balancers and orchestrators.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::db::{DbPool, migrations};
use crate::events::Listener;
use crate::http::HttpState;

/// The longest a readiness check waits for the database: an orchestrator's
/// probe should get its answer, not a hang, when the database is away.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// What `/readyz` checks: the database answers, no migration is pending, and
/// (for a worker) the process is listening for notifications.
#[derive(Clone)]
pub struct Readiness {
    pool: DbPool,
    listener: Option<Listener>,
}

/// Why the process is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// No connection, or no answer within [`READINESS_TIMEOUT`].
    DatabaseUnreachable,
    /// The database lacks these migrations (by version): another instance
    /// is migrating it, or it was migrated by an older release.
    MigrationsPending(Vec<String>),
    /// The LISTEN connection is down: wake-ups and cancellations are missed.
    NotListening,
}

impl Readiness {
    /// Checks the database through `pool`.
    pub fn new(pool: DbPool) -> Self {
        Readiness {
            pool,
            listener: None,
        }
    }

    /// Also requires `listener` to be connected.
    #[must_use]
    pub fn with_listener(mut self, listener: Listener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Ready, or why not. One connection, one `SELECT 1`-sized read of the
    /// applied migrations, within [`READINESS_TIMEOUT`].
    pub async fn check(&self) -> Result<(), NotReady> {
        if self
            .listener
            .as_ref()
            .is_some_and(|listener| !listener.is_connected())
        {
            return Err(NotReady::NotListening);
        }
        let pending = async {
            let mut conn = self.pool.get().await.ok()?;
            migrations::pending(&mut conn).await.ok()
        };
        match tokio::time::timeout(READINESS_TIMEOUT, pending).await {
            Ok(Some(pending)) if pending.is_empty() => Ok(()),
            Ok(Some(pending)) => Err(NotReady::MigrationsPending(pending)),
            Ok(None) | Err(_) => Err(NotReady::DatabaseUnreachable),
        }
    }

    /// `/readyz`'s answer: 200, or 503 with the reason.
    pub async fn respond(&self) -> (StatusCode, Json<Value>) {
        match self.check().await {
            Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
            Err(not_ready) => {
                let body = match not_ready {
                    NotReady::DatabaseUnreachable => {
                        json!({ "status": "unavailable", "reason": "database unreachable" })
                    }
                    NotReady::MigrationsPending(versions) => json!({
                        "status": "unavailable",
                        "reason": "migrations pending",
                        "pending": versions,
                    }),
                    NotReady::NotListening => json!({
                        "status": "unavailable",
                        "reason": "not listening for notifications",
                    }),
                };
                (StatusCode::SERVICE_UNAVAILABLE, Json(body))
            }
        }
    }
}

/// `GET /healthz`: the process is up and answering.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the database answers and is fully migrated; 503 when not.
pub async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Value>) {
    Readiness::new(state.app.pool().clone()).respond().await
}
