//! The `serve`, `worker`, `mcp`, `migrate` and `tenant` commands: start-up, running,
//! and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::auth::{self, AuthMode, Authenticator, Principal, Role};
use crate::config::{
    DatabaseArgs, McpArgs, ProviderArgs, RunArgs, ServeArgs, TenantCommand, TenantSetArgs,
    TokenAction, TokenArgs, WorkerCommandArgs,
};
use crate::db;
use crate::events::{EVENTS_CHANNEL, Listener};
use crate::http::{HttpAuth, HttpOptions, Readiness};
use crate::metrics::Metrics;
use crate::output::OUTPUT_CHANNEL;
use crate::providers::config::load_router;
use crate::providers::routing::ModelRouter;
use crate::queue::{CANCEL_CHANNEL, DUE_CHANNEL, Worker};
use crate::tasks::validation::check_tenant_name;
use crate::tenants::settings;

/// How often providers are asked again which models they serve.
const MODEL_REFRESH_PERIOD: Duration = Duration::from_secs(300);
/// How long a provider may take to list its models.
const MODEL_LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Chooses the database (DATABASE_URL, the default address or the private
/// cluster: `db::embedded`), prepares it, binds the port, then serves HTTP and (unless
/// `--workers 0`) runs workers until Ctrl-C or SIGTERM. On the signal the
/// workers stop claiming at once; requests in flight and running tasks get
/// the grace period; the process ends within the grace period plus a few
/// seconds, whether or not the database answers.
pub async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let cluster = db::embedded::resolve(&mut args.run.database).await?;
    let served = serve_until_shutdown(args, &shutdown).await;
    db::embedded::release(cluster).await;
    served
}

/// `serve` once its database is chosen; whatever it returns, the caller
/// then releases the private cluster, with every pool and listener closed.
async fn serve_until_shutdown(args: ServeArgs, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let auth_mode = args.auth_mode();
    let ServeArgs {
        bind,
        graphiql_cdn,
        mcp_allowed_hosts,
        auth: _,
        metrics_token,
        run,
    } = args;
    match auth_mode {
        AuthMode::Tokens => tracing::info!("tokens are on: API requests need a bearer token"),
        AuthMode::Off if !bind.ip().is_loopback() => tracing::warn!(
            %bind,
            "tokens are off on an address other machines can reach: anyone who reaches it \
             acts as the operator (an admin); set --auth tokens unless something in front \
             of it checks who is asking"
        ),
        AuthMode::Off => tracing::info!("tokens are off: every request acts as the operator"),
    }
    let started = async {
        let router = providers(&run.providers).await?;
        let state = AppState::connect(&run.database, router).await?;
        let listener = TcpListener::bind(bind)
            .await
            .with_context(|| format!("could not listen on {bind}"))?;
        Ok((state, listener))
    };
    let Some((state, listener)) = until_cancelled(shutdown, started).await? else {
        return Ok(());
    };
    let address = listener.local_addr()?;
    // The process's one LISTEN connection: subscribers' events and answers'
    // text, and the workers' wake-ups and cancellations when it runs workers.
    let mut channels = vec![EVENTS_CHANNEL, OUTPUT_CHANNEL];
    if run.worker.workers > 0 {
        channels.extend([DUE_CHANNEL, CANCEL_CHANNEL]);
    }
    let notifications = Listener::start(
        run.database.database_url.clone(),
        run.database.timeout(),
        channels,
        shutdown.clone(),
    )
    .await;
    state.listen_on(&notifications);
    tracing::info!(%address, "listening; GraphiQL at http://{address}/, MCP at http://{address}/mcp");
    let authenticator =
        (auth_mode == AuthMode::Tokens).then(|| Authenticator::new(state.pool().clone()));
    let options = HttpOptions {
        graphiql_cdn,
        mcp: crate::mcp::HttpSettings {
            allowed_hosts: mcp_allowed_hosts,
            shutdown: shutdown.child_token(),
            fallback: authenticator.is_none().then(Principal::operator),
        },
        auth: HttpAuth {
            authenticator,
            metrics_token: metrics_token
                .filter(|token| !token.is_empty())
                .map(Arc::from),
        },
    };
    let http = tokio::spawn(
        axum::serve(listener, crate::http::router_with(state.clone(), options))
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );
    // Workers start once the port is bound: a process that cannot serve
    // never takes tasks.
    let worker = start_worker(&run, state.router(), &notifications, state.metrics()).await?;
    shutdown.cancelled().await;

    let grace = Duration::from_secs(run.worker.shutdown_grace_seconds);
    let requests = async {
        match tokio::time::timeout(grace, http).await {
            Ok(Ok(served)) => served.context("the HTTP server failed"),
            Ok(Err(stopped)) => Err(anyhow::anyhow!("the HTTP server stopped: {stopped}")),
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "requests still in flight after the grace period were cut off"
                );
                Ok(())
            }
        }
    };
    let tasks = async {
        if let Some(worker) = worker {
            worker.shutdown().await;
        }
    };
    let (served, ()) = tokio::join!(requests, tasks);
    state.flush_events(Duration::from_secs(1)).await;
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// Runs workers only, until Ctrl-C or SIGTERM, serving `/healthz`,
/// `/readyz` and `/metrics` on `--metrics-bind` (bound before the first
/// claim, so a process that cannot be watched never takes tasks).
pub async fn worker(args: WorkerCommandArgs) -> anyhow::Result<()> {
    let WorkerCommandArgs {
        metrics_bind,
        metrics_token,
        run: mut args,
    } = args;
    if args.worker.workers == 0 {
        anyhow::bail!("--workers is 0: a worker process needs at least one slot");
    }
    let shutdown = shutdown_on_signal();
    let cluster = db::embedded::resolve(&mut args.database).await?;
    let metrics_token = metrics_token
        .filter(|token| !token.is_empty())
        .map(Arc::from);
    let worked = work_until_shutdown(&args, metrics_bind, metrics_token, &shutdown).await;
    db::embedded::release(cluster).await;
    worked
}

/// `worker` once its database is chosen.
async fn work_until_shutdown(
    args: &RunArgs,
    metrics_bind: SocketAddr,
    metrics_token: Option<Arc<str>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let started = async {
        let router = providers(&args.providers).await?;
        db::prepare_database(&args.database).await?;
        let probes = TcpListener::bind(metrics_bind)
            .await
            .with_context(|| format!("could not listen on {metrics_bind} (--metrics-bind)"))?;
        Ok((router, probes))
    };
    let Some((router, probes)) = until_cancelled(shutdown, started).await? else {
        return Ok(());
    };
    let address = probes.local_addr()?;
    // Stopped once the worker has stopped: it hears cancellations until then.
    let finished = CancellationToken::new();
    let notifications = Listener::start(
        args.database.database_url.clone(),
        args.database.timeout(),
        vec![DUE_CHANNEL, CANCEL_CHANNEL],
        finished.clone(),
    )
    .await;
    let metrics = Arc::new(Metrics::new());
    let readiness =
        Readiness::new(db::build_probe_pool(&args.database)?).with_listener(notifications.clone());
    let http = tokio::spawn(
        axum::serve(
            probes,
            crate::http::worker_router(Arc::clone(&metrics), readiness, metrics_token),
        )
        .with_graceful_shutdown(finished.clone().cancelled_owned())
        .into_future(),
    );
    tracing::info!(%address, "health checks and metrics at http://{address}/metrics");
    let worker = start_worker(args, &router, &notifications, &metrics).await?;
    shutdown.cancelled().await;
    if let Some(worker) = worker {
        worker.shutdown().await;
    }
    finished.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
    tracing::info!("stopped");
    Ok(())
}

/// Serves MCP on stdin and stdout until the client closes stdin, Ctrl-C or
/// SIGTERM. Runs no workers: the tasks its tools create are run by `serve` or
/// `worker` processes on the same database.
pub async fn mcp(mut args: McpArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signal();
    let cluster = db::embedded::resolve(&mut args.database).await?;
    let served = mcp_until_shutdown(args, shutdown).await;
    db::embedded::release(cluster).await;
    served
}

/// `mcp` once its database is chosen.
async fn mcp_until_shutdown(args: McpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let started = async {
        let router = providers(&args.providers).await?;
        AppState::connect(&args.database, router).await
    };
    let Some(state) = until_cancelled(&shutdown, started).await? else {
        return Ok(());
    };
    let principal = match args.tenant {
        None => Principal::operator(),
        Some(tenant) => {
            let tenant = check_tenant_name("--tenant", tenant)
                .map_err(|invalid| anyhow::anyhow!("--tenant {}", invalid.message))?;
            let mut conn = state
                .pool()
                .get()
                .await
                .context("could not reach the database")?;
            if !auth::store::tenant_exists(&mut conn, &tenant)
                .await
                .context("could not look the tenant up")?
            {
                anyhow::bail!(
                    "no tenant is named {tenant:?}: `taskrunner token create --tenant {tenant}` makes one"
                );
            }
            tracing::info!(%tenant, "acting for one tenant, as a member");
            Principal::local(tenant, Role::Member)
        }
    };
    // `wait_for_task` hears of changes made by any process through the hub.
    let notifications = Listener::start(
        args.database.database_url.clone(),
        args.database.timeout(),
        vec![EVENTS_CHANNEL],
        shutdown.clone(),
    )
    .await;
    state.listen_on(&notifications);
    let served = crate::mcp::serve_stdio(state.clone(), principal, shutdown).await;
    state.flush_events(Duration::from_secs(1)).await;
    served
}

/// Runs start-up unless shutdown is asked for first (start-up can wait a
/// long time for a database that is not there yet).
async fn until_cancelled<T>(
    shutdown: &CancellationToken,
    start_up: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<Option<T>> {
    tokio::select! {
        started = start_up => started.map(Some),
        () = shutdown.cancelled() => {
            tracing::info!("stopped before start-up finished");
            Ok(None)
        }
    }
}

/// Applies pending migrations (creating the database first if need be).
pub async fn migrate(mut args: DatabaseArgs) -> anyhow::Result<()> {
    let cluster = db::embedded::resolve(&mut args).await?;
    let migrated = db::prepare_database(&args).await;
    db::embedded::release(cluster).await;
    migrated.map(drop)
}

/// Creates, lists or revokes tokens (creating and migrating the database
/// first if need be).
pub async fn token(mut args: TokenArgs) -> anyhow::Result<()> {
    let database = args.action.database();
    let cluster = db::embedded::resolve(database).await?;
    let done = token_on_database(args.action).await;
    db::embedded::release(cluster).await;
    done
}

/// `taskrunner tenant set` and `tenant list`: prepares the database as
/// `migrate` does, then changes or prints the tenants.
pub async fn tenant(command: TenantCommand) -> anyhow::Result<()> {
    let (mut database, set) = match command {
        TenantCommand::Set(args) => {
            let database = args.database.clone();
            (database, Some(args))
        }
        TenantCommand::List(database) => (database, None),
    };
    let cluster = db::embedded::resolve(&mut database).await?;
    let done = tenant_on(&database, set).await;
    db::embedded::release(cluster).await;
    done
}

/// `token` once its database is chosen.
async fn token_on_database(mut action: TokenAction) -> anyhow::Result<()> {
    let database = action.database().clone();
    db::prepare_database(&database).await?;
    let mut conn = db::establish(&database.database_url, database.timeout())
        .await
        .with_context(|| {
            format!(
                "could not connect to {}",
                db::redact_url(&database.database_url)
            )
        })?;
    match action {
        TokenAction::Create(args) => crate::auth::commands::create(&mut conn, args).await,
        TokenAction::List(_) => crate::auth::commands::list(&mut conn).await,
        TokenAction::Revoke(args) => crate::auth::commands::revoke(&mut conn, args.id).await,
    }
}

/// `tenant` once its database is chosen.
async fn tenant_on(database: &DatabaseArgs, set: Option<TenantSetArgs>) -> anyhow::Result<()> {
    db::prepare_database(database).await?;
    let mut conn = db::establish(&database.database_url, database.timeout())
        .await
        .context("could not connect to the database")?;
    if let Some(args) = set {
        settings::set(
            &mut conn,
            &args.name,
            args.max_pending,
            args.creates_per_minute,
        )
        .await
        .with_context(|| format!("could not set tenant {:?}", args.name))?;
    }
    let rows = settings::list(&mut conn)
        .await
        .context("could not list the tenants")?;
    let limit = |value: Option<i32>| value.map_or_else(|| "none".to_owned(), |n| n.to_string());
    println!(
        "{:<24} {:>12} {:>19} {:>10}",
        "NAME", "MAX_PENDING", "CREATES_PER_MINUTE", "PENDING"
    );
    for row in rows {
        println!(
            "{:<24} {:>12} {:>19} {:>10}",
            row.name,
            limit(row.max_pending),
            limit(row.creates_per_minute),
            row.pending
        );
    }
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

/// Starts the workers `args` ask for, with a pool of their own, on the
/// process's listener, recording into the process's metrics.
async fn start_worker(
    args: &RunArgs,
    router: &Arc<ModelRouter>,
    listener: &Listener,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<Worker>> {
    if args.worker.workers == 0 {
        tracing::info!("--workers is 0: serving the API only");
        return Ok(None);
    }
    let router = Arc::clone(router);
    let config = args.worker.worker_config();
    let worker = Worker::start_on_measured(
        &args.database,
        router,
        config,
        listener,
        Arc::clone(metrics),
    )
    .await?;
    Ok(Some(worker))
}

/// A token cancelled on the first Ctrl-C (SIGINT) or SIGTERM. A second signal
/// ends the process at once, for an operator who will not wait.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new tasks; finishing requests and tasks in flight");
        cancel.cancel();
        shutdown_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    token
}

/// Resolves on the next Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
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
}
