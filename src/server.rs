//! The `serve` and `migrate` commands: start-up, listening, graceful shutdown.

use anyhow::Context;
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::config::{DatabaseArgs, ServeArgs};
use crate::db;

/// Prepares the database, then serves HTTP until Ctrl-C or SIGTERM. Requests
/// in flight when the signal comes are finished before it returns.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let state = AppState::connect(&args.database).await?;
    let listener = TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("could not listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "listening; GraphiQL at http://{address}/");
    axum::serve(listener, crate::http::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("the HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Applies pending migrations (creating the database first if need be).
pub async fn migrate(args: DatabaseArgs) -> anyhow::Result<()> {
    db::prepare_database(&args).await?;
    Ok(())
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
    tracing::info!("shutting down: finishing requests in flight");
}
