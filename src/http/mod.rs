//! The HTTP surface: GraphQL (subscriptions over WebSocket on the same
//! path), GraphiQL, MCP, health checks, Prometheus metrics, and the layers every request passes
//! through (request id, tracing, body limit, panic guard).

mod auth;
mod graphiql;
mod graphql;
mod health;
mod metrics;
mod subscriptions;

use axum::Router;
use axum::http::{HeaderName, Request};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::graphql::TaskRunnerSchema;
use crate::mcp;

pub use auth::{HttpAuth, check_metrics_token};
pub use graphiql::{DEFAULT_GRAPHIQL_CDN, GraphiqlCdn, GraphiqlPage};
pub use health::{NotReady, READINESS_TIMEOUT, Readiness};
pub use metrics::worker_router;

/// The largest request body accepted. A prompt at its limit of 100,000
/// characters, JSON-escaped at worst (`\uXXXX` pairs), still fits.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The header that carries a request's id, taken from the client or made here.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The liveness path: `taskrunner healthcheck` asks it, so the two must agree.
pub const HEALTHZ_PATH: &str = "/healthz";

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub schema: TaskRunnerSchema,
    pub app: AppState,
    /// GraphiQL's page, rendered once when the router is built.
    pub graphiql: GraphiqlPage,
    /// Who requests act as.
    pub auth: HttpAuth,
}

/// What `serve`'s settings change in the HTTP application.
#[derive(Debug, Clone, Default)]
pub struct HttpOptions {
    /// Where GraphiQL's page loads its files from.
    pub graphiql_cdn: GraphiqlCdn,
    /// How `/mcp` is served (by default it answers the loopback host names only).
    pub mcp: mcp::HttpSettings,
    /// Tokens on or off, and the metrics token.
    pub auth: HttpAuth,
}

/// The whole HTTP application, with every option at its default.
pub fn router(app: AppState) -> Router {
    router_with(app, HttpOptions::default())
}

/// The whole HTTP application, as `options` configure it.
/// With tokens on, `/mcp` has no fallback principal: a request the
/// authentication layer let through always carries its own.
pub fn router_with(app: AppState, options: HttpOptions) -> Router {
    let HttpOptions {
        graphiql_cdn,
        mut mcp,
        auth,
    } = options;
    if auth.authenticator.is_some() {
        mcp.fallback = None;
    }
    let mcp = ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            auth::authenticate_mcp,
        ))
        .service(mcp::http_service(app.clone(), mcp));
    let state = HttpState {
        schema: crate::graphql::schema(app.clone()),
        app,
        graphiql: GraphiqlPage::new(&graphiql_cdn),
        auth,
    };
    Router::new()
        .route("/", get(graphiql::graphiql))
        .route("/graphiql", get(graphiql::graphiql))
        .route(
            "/graphql",
            get(graphql::get_graphql).post(graphql::execute_post),
        )
        .route_service("/mcp", mcp)
        .route(HEALTHZ_PATH, get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::serve_metrics))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
                .layer(CatchPanicLayer::new())
                .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES)),
        )
}

/// The span every request's logs belong to, named by its request id.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id,
    )
}
