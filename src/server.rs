//! The `serve`, `worker` and `migrate` commands: start-up, running, and
//! graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::config::{DatabaseArgs, ProviderArgs, RunArgs, ServeArgs, WorkerArgs};
use crate::db;
use crate::providers::config::load_router;
use crate::providers::routing::ModelRouter;
use crate::queue::Worker;

/// How often providers are asked again which models they serve.
const MODEL_REFRESH_PERIOD: Duration = Duration::from_secs(300);
/// How long a provider may take to list its models.
const MODEL_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepares the database, then serves HTTP (and, unless `--workers 0`, runs
/// workers) until Ctrl-C or SIGTERM. Requests in flight when the signal comes
/// are finished; running tasks get the grace period.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs { bind, run } = args;
    let router = providers(&run.providers).await?;
    let state = AppState::connect(&run.database, Arc::clone(&router)).await?;
    let worker = start_worker(&state, &run.database, &run.worker).await;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("could not listen on {bind}"))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening; GraphiQL at http://{address}/");
    let served = axum::serve(listener, crate::http::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server failed");
    if let Some(worker) = worker {
        worker.shutdown().await;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs workers only, until Ctrl-C or SIGTERM.
pub async fn worker(args: RunArgs) -> anyhow::Result<()> {
    if args.worker.workers == 0 {
        anyhow::bail!("--workers is 0: a worker process needs at least one slot");
    }
    let router = providers(&args.providers).await?;
    let state = AppState::connect(&args.database, router).await?;
    let worker = start_worker(&state, &args.database, &args.worker).await;
    shutdown_signal().await;
    if let Some(worker) = worker {
        worker.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Applies pending migrations (creating the database first if need be).
pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    db::prepare_database(&args).await?;
    Ok(())
}

/// Loads the provider routes, asks providers for their models, and keeps
/// asking now and then.
async fn providers(args: &ProviderArgs) -> anyhow::Result<Arc<ModelRouter>> {
    let router = Arc::new(load_router(args.config.as_deref())?);
    router.refresh(MODEL_LIST_TIMEOUT).await;
    let refreshed = Arc::clone(&router);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(MODEL_REFRESH_PERIOD).await;
            refreshed.refresh(MODEL_LIST_TIMEOUT).await;
        }
    });
    Ok(router)
}

async fn start_worker(
    state: &AppState,
    database: &DatabaseArgs,
    args: &WorkerArgs,
) -> Option<Worker> {
    if args.workers == 0 {
        tracing::info!("--workers is 0: serving the API only");
        return None;
    }
    Some(
        Worker::start(
            state.pool().clone(),
            database,
            Arc::clone(state.router()),
            args.worker_config(),
        )
        .await,
    )
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing requests and tasks in flight");
}
