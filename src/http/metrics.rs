//! `GET /metrics` (Prometheus, OpenMetrics text), and the worker's own small
//! HTTP surface: `/healthz`, `/readyz` and `/metrics` on `--metrics-bind`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use axum::http::HeaderMap;

use crate::http::HttpState;
use crate::http::auth::{check_metrics_token, refusal};
use crate::http::health::{self, Readiness};
use crate::metrics::{self, Metrics};

/// `GET /metrics` on `serve`'s port.
pub async fn serve_metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Err(refused) = state.auth.check_metrics(&headers) {
        return refusal(refused);
    }
    render(state.app.metrics()).await
}

/// The metrics as a scrape's answer.
async fn render(metrics: &Metrics) -> Response {
    let text = metrics.render().await;
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// What the worker's endpoints share.
#[derive(Clone)]
struct WorkerProbes {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    metrics_token: Option<Arc<str>>,
}

/// The HTTP surface of `taskrunner worker`: `/healthz`, `/readyz` (the
/// database, its migrations, and the worker's LISTEN connection) and
/// `/metrics` (asking for `metrics_token`, if given, as a bearer token).
pub fn worker_router(
    metrics: Arc<Metrics>,
    readiness: Readiness,
    metrics_token: Option<Arc<str>>,
) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route(
            "/readyz",
            get(|State(probes): State<WorkerProbes>| async move {
                probes.readiness.respond().await
            }),
        )
        .route(
            "/metrics",
            get(
                |State(probes): State<WorkerProbes>, headers: HeaderMap| async move {
                    if let Err(refused) =
                        check_metrics_token(probes.metrics_token.as_deref(), &headers)
                    {
                        return refusal(refused);
                    }
                    render(&probes.metrics).await
                },
            ),
        )
        .with_state(WorkerProbes {
            metrics,
            readiness,
            metrics_token,
        })
}
