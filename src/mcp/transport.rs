//! The two ways in: stdio, for a desktop assistant that starts `taskrunner mcp`
//! itself, and streamable HTTP at `/mcp` on the port `serve` listens on.

use std::io::Read;
use std::sync::Arc;

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::service::ServerInitializeError;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::io::{AsyncWriteExt, ReadHalf, SimplexStream};
use tokio_util::sync::CancellationToken;

use crate::app::AppState;
use crate::auth::Principal;
use crate::mcp::TaskRunnerMcp;

/// The `Host` names `/mcp` answers unless configured otherwise, with any port:
/// the loopback names, so that a web page cannot reach a local server through
/// a DNS name it rebinds to 127.0.0.1.
pub const DEFAULT_ALLOWED_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// How `/mcp` is served.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The `Host` names answered (names, or `name:port` for one port only);
    /// `*` allows any host.
    pub allowed_hosts: Vec<String>,
    /// Cancelled when the server shuts down: ends the tool calls in flight (a
    /// `wait_for_task` would otherwise hold the graceful shutdown for its
    /// whole timeout).
    pub shutdown: CancellationToken,
    /// Who a request acts as when the layers before `/mcp` named no
    /// principal: the operator when tokens are off, nobody (refused) when
    /// they are on.
    pub fallback: Option<Principal>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            allowed_hosts: DEFAULT_ALLOWED_HOSTS.map(String::from).to_vec(),
            shutdown: CancellationToken::new(),
            fallback: Some(Principal::operator()),
        }
    }
}

/// The MCP endpoint, as an HTTP service to mount at `/mcp`.
///
/// Stateless: the server keeps no session between requests, so every
/// instance behind a load balancer can answer every request, as it can for
/// GraphQL (tasks live in PostgreSQL alone). A tool call is answered as JSON,
/// or as an event stream when it sends progress notifications first.
///
/// A request whose `Host` is not allowed is refused 403 (DNS-rebinding
/// protection).
pub fn http_service(
    state: AppState,
    settings: HttpSettings,
) -> StreamableHttpService<TaskRunnerMcp, NeverSessionManager> {
    let HttpSettings {
        allowed_hosts,
        shutdown,
        fallback,
    } = settings;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_cancellation_token(shutdown);
    let config = if allowed_hosts.iter().any(|host| host == "*") {
        config.disable_allowed_hosts()
    } else {
        config.with_allowed_hosts(allowed_hosts)
    };
    let prototype = TaskRunnerMcp::new(state, fallback);
    StreamableHttpService::new(
        move || Ok(prototype.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Serves MCP on stdin and stdout, acting as `principal`, until the client
/// closes stdin or `shutdown` is cancelled. Nothing else may write to stdout
/// meanwhile: logs go to stderr.
pub async fn serve_stdio(
    state: AppState,
    principal: Principal,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let stdin = stdin_on_a_thread().context("could not start reading stdin")?;
    let running = match TaskRunnerMcp::new(state, Some(principal))
        .serve_with_ct((stdin, tokio::io::stdout()), shutdown)
        .await
    {
        Ok(running) => running,
        // Shutdown asked for before the client finished the handshake.
        Err(ServerInitializeError::Cancelled) => return Ok(()),
        Err(error) => {
            return Err(error).context("the MCP client did not complete the handshake on stdin");
        }
    };
    tracing::info!("serving MCP on stdio");
    let reason = running
        .waiting()
        .await
        .context("the MCP server stopped unexpectedly")?;
    tracing::info!(?reason, "MCP client gone or shutdown asked for");
    Ok(())
}

/// Stdin, read on a thread of its own.
///
/// A read of stdin cannot be cancelled. On tokio's blocking pool (where
/// `tokio::io::stdin` reads), a pending one keeps the runtime, and so the
/// process, alive after shutdown until the client sends another line or
/// closes stdin. A plain thread does not hold the process back.
fn stdin_on_a_thread() -> std::io::Result<ReadHalf<SimplexStream>> {
    const BUFFER: usize = 64 * 1024;
    let (reader, mut writer) = tokio::io::simplex(BUFFER);
    let runtime = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("mcp-stdin".to_owned())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = vec![0; BUFFER];
            loop {
                let read = match stdin.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => read,
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(error) => {
                        tracing::warn!(%error, "could not read stdin");
                        break;
                    }
                };
                let Some(bytes) = buffer.get(..read) else {
                    break;
                };
                if runtime.block_on(writer.write_all(bytes)).is_err() {
                    // Nothing reads the stream any more.
                    return;
                }
            }
            // End of input: the server sees it and ends.
            let _closed = runtime.block_on(writer.shutdown());
        })?;
    Ok(reader)
}
