//! The command line and its environment variables. Every option's doc comment
//! is its `--help` text; each may also be set from the environment variable
//! named beside it (and from a `.env` file, which `main` reads first).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::auth::AuthMode;
use crate::http::GraphiqlCdn;

/// The default database: a local PostgreSQL, trusted connections.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@localhost:5432/taskrunner";

/// Where `serve` listens by default, and so where `healthcheck` looks: this
/// machine only, until told otherwise.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";

/// taskrunner: queue AI tasks over GraphQL and run them in the background.
#[derive(Debug, Parser)]
#[command(name = "taskrunner", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options for `serve`, which runs when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Cli {
    /// Parses the process's command line, exiting on a bad one as clap does
    /// (status 2), except for `healthcheck`, which exits 1: container engines
    /// reserve 2 in health checks, and a check that cannot run must read as
    /// unhealthy.
    pub fn parse_or_exit() -> Cli {
        Cli::try_parse().unwrap_or_else(|error| {
            if error.use_stderr() && names_healthcheck(std::env::args_os().skip(1)) {
                // Printing to stderr can only fail when stderr is gone.
                let _ = error.print();
                std::process::exit(1);
            }
            error.exit()
        })
    }
}

/// Whether a command line (without the program name) runs `healthcheck`:
/// its first word that is not an option, past the global `--log-format`'s
/// value.
fn names_healthcheck(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--log-format" {
            args.next();
        } else if !arg.to_string_lossy().starts_with('-') {
            return arg == "healthcheck";
        }
    }
    false
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the GraphQL API, GraphiQL and MCP (at `/mcp`), and run workers
    /// in-process (the default): prepares the database, applies pending
    /// migrations, then runs until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Run workers only: start as many as you like, on as many machines,
    /// against one PostgreSQL. Serves only `/healthz`, `/readyz` and
    /// `/metrics`, on `--metrics-bind`.
    Worker(WorkerCommandArgs),
    /// Serve MCP (Model Context Protocol) on stdin and stdout, for an AI
    /// assistant that starts this command itself.
    ///
    /// Its tools create and follow tasks in the same database `serve` uses.
    /// It runs no workers: `serve` or `worker` processes run the tasks. Logs
    /// go to stderr; stdout carries the protocol alone.
    Mcp(McpArgs),
    /// Apply pending database migrations, then exit.
    Migrate(DatabaseArgs),
    /// Create, list and revoke API tokens (the database is prepared first, as
    /// `migrate` does).
    Token(TokenArgs),
    /// Print the GraphQL schema (SDL) to stdout, as checked in to `schema.graphql`.
    Schema,
    /// Set a tenant's quotas, or list the tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Ask a running `serve` whether it is healthy (`GET /healthz`), for
    /// container health checks: exit 0 on a 2xx answer, 1 otherwise, with the
    /// reason on stderr.
    ///
    /// Needs neither the database nor the providers, and no curl in the image.
    Healthcheck(HealthcheckArgs),
}

/// Options of the `serve` command.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address and port to listen on (use port 0 for any free port).
    #[arg(long, env = "TASKRUNNER_BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// Base URL GraphiQL's page loads its files from, as
    /// `{cdn}/{package}@{version}/{path}` (React and GraphiQL, pinned, each
    /// checked against its integrity hash). Point it at a mirror, or at a
    /// directory laid out from the npm packages, where browsers cannot reach
    /// the public CDN; the mirror must send Access-Control-Allow-Origin.
    #[arg(long, env = "TASKRUNNER_GRAPHIQL_CDN", default_value = crate::http::DEFAULT_GRAPHIQL_CDN)]
    pub graphiql_cdn: GraphiqlCdn,

    /// Host names the MCP endpoint (`/mcp`) answers, comma-separated, each
    /// with any port (`name:port` for one port only; `*` for any host). A
    /// request with another Host header is refused 403, so that a web page
    /// cannot reach a local server through a DNS name it rebinds. Add the
    /// names clients use when serving beyond this machine.
    #[arg(
        long,
        env = "TASKRUNNER_MCP_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,[::1]",
        value_parser = parse_allowed_host
    )]
    pub mcp_allowed_hosts: Vec<String>,

    /// Whether API requests need a token: `tokens` (`Authorization: Bearer
    /// <token>` on /graphql and /mcp, `connection_init` {"authorization":
    /// "Bearer <token>"} on WebSocket) or `off` (every request acts as the
    /// operator). Default: `off` when --bind is a loopback address, `tokens`
    /// otherwise.
    #[arg(long, env = "TASKRUNNER_AUTH", value_enum)]
    pub auth: Option<AuthMode>,

    /// A token `/metrics` asks for (`Authorization: Bearer <it>`). Unset:
    /// `/metrics` is open.
    #[arg(long, env = "TASKRUNNER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    #[command(flatten)]
    pub run: RunArgs,
}

impl ServeArgs {
    /// `--auth`, or its default for the address bound: off on loopback only.
    pub fn auth_mode(&self) -> AuthMode {
        self.auth.unwrap_or(if self.bind.ip().is_loopback() {
            AuthMode::Off
        } else {
            AuthMode::Tokens
        })
    }
}

/// Options of the `mcp` command: the database and providers, as `serve` has them.
#[derive(Debug, Clone, Args)]
pub struct McpArgs {
    /// Act for this tenant (as a member: its tasks only, new tasks its own).
    /// The tenant must exist (`taskrunner token create` makes one). Unset:
    /// act as the operator.
    #[arg(long)]
    pub tenant: Option<String>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub providers: ProviderArgs,
}

/// Options of the `healthcheck` command.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The URL to ask (`/healthz` when it names no path). Default: `/healthz`
    /// at `--bind`.
    #[arg(value_name = "URL")]
    pub url: Option<String>,

    /// The address `serve` listens on, read from the same variable so that a
    /// container's one setting serves both. An unspecified address (0.0.0.0,
    /// [::]) is asked on the loopback of its family. Unused when a URL is given.
    #[arg(long, env = "TASKRUNNER_BIND", default_value = DEFAULT_BIND)]
    pub bind: SocketAddr,

    /// Seconds to wait for the whole answer before calling the server unhealthy.
    #[arg(long, env = "TASKRUNNER_HEALTHCHECK_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub timeout_seconds: u64,
}

/// One entry of `--mcp-allowed-hosts`: `*`, a host name or address, or one
/// with a port.
fn parse_allowed_host(entry: &str) -> Result<String, String> {
    let entry = entry.trim();
    if entry == "*" {
        return Ok(entry.to_owned());
    }
    match entry.parse::<axum::http::uri::Authority>() {
        Ok(authority) if !authority.host().is_empty() && !authority.as_str().contains('@') => {
            Ok(entry.to_ascii_lowercase())
        }
        _ => Err(format!(
            "{entry:?} is not a host name (e.g. `localhost`, `tasks.example.com:8443`, `[::1]`)"
        )),
    }
}

/// Options of the `worker` command: those `serve` shares, and where to serve
/// its health checks and metrics.
#[derive(Debug, Clone, Args)]
pub struct WorkerCommandArgs {
    /// Address and port of the worker's `/healthz`, `/readyz` and `/metrics`
    /// (use port 0 for any free port; the log says which).
    #[arg(
        long,
        env = "TASKRUNNER_METRICS_BIND",
        default_value = "127.0.0.1:9464"
    )]
    pub metrics_bind: SocketAddr,

    /// A token `/metrics` asks for (`Authorization: Bearer <it>`). Unset:
    /// `/metrics` is open.
    #[arg(long, env = "TASKRUNNER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of the `token` command.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

/// What to do with tokens.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Make a token and print its secret on stdout, once: it is not stored
    /// and cannot be shown again. The tenant is created if it is new.
    Create(TokenCreateArgs),
    /// List every token (never its secret).
    List(DatabaseArgs),
    /// Revoke a token: every server refuses it within a second.
    Revoke(TokenRevokeArgs),
}

impl TokenAction {
    /// The database the action works on.
    pub fn database(&mut self) -> &mut DatabaseArgs {
        match self {
            TokenAction::Create(args) => &mut args.database,
            TokenAction::List(database) => database,
            TokenAction::Revoke(args) => &mut args.database,
        }
    }
}

/// Options of `token create`.
#[derive(Debug, Clone, Args)]
pub struct TokenCreateArgs {
    /// The tenant it acts for.
    #[arg(long)]
    pub tenant: String,
    /// What it may do: `admin` (every tenant's tasks), `member` (its
    /// tenant's), `reader` (read its tenant's).
    #[arg(long, value_enum, default_value_t = TokenRole::Member)]
    pub role: TokenRole,
    /// A label for lists (who or what holds it).
    #[arg(long)]
    pub name: Option<String>,
    /// Days until it stops working. Unset: it never expires.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub expires_in_days: Option<u32>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// Options of `token revoke`.
#[derive(Debug, Clone, Args)]
pub struct TokenRevokeArgs {
    /// The token's id, as `token list` shows it.
    pub id: i64,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// A token's role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    /// Reads and changes every tenant's tasks.
    Admin,
    /// Reads and changes its own tenant's tasks.
    Member,
    /// Reads its own tenant's tasks.
    Reader,
}

impl From<TokenRole> for crate::auth::Role {
    fn from(role: TokenRole) -> Self {
        match role {
            TokenRole::Admin => crate::auth::Role::Admin,
            TokenRole::Member => crate::auth::Role::Member,
            TokenRole::Reader => crate::auth::Role::Reader,
        }
    }
}

/// What both `serve` and `worker` need: the database, how to run tasks, and
/// where the providers are (the options of the `worker` command).
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub worker: WorkerArgs,

    #[command(flatten)]
    pub providers: ProviderArgs,
}

/// How a process runs tasks.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Tasks in flight at once in this process (0: run none, API only). A model
    /// call mostly waits, so hundreds are fine: in-flight tasks hold no
    /// database connection.
    #[arg(long, env = "TASKRUNNER_WORKERS", default_value_t = 64)]
    pub workers: usize,

    /// How long a claimed task stays this worker's without a heartbeat.
    /// Heartbeats come every third of it; when a worker dies, its tasks go to
    /// another once this passes.
    #[arg(long, env = "TASKRUNNER_LEASE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    pub lease_seconds: u64,

    /// On SIGINT or SIGTERM, how long running tasks may take to finish before
    /// they are stopped and handed back to the queue for another worker.
    #[arg(long, env = "TASKRUNNER_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// How long one attempt may run when neither the task (`timeoutSeconds`)
    /// nor its provider (`timeout_seconds` in taskrunner.toml) sets a limit.
    #[arg(long, env = "TASKRUNNER_TASK_TIMEOUT_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub task_timeout_seconds: u64,

    /// Most tasks taken from the queue in one claim (never more than the free slots).
    #[arg(long, env = "TASKRUNNER_CLAIM_BATCH", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub claim_batch: u64,

    /// How often to look for due tasks when no notification arrives, in
    /// milliseconds (notifications normally wake workers at once).
    #[arg(long, env = "TASKRUNNER_POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_interval_ms: u64,
}

/// Where model providers are configured.
#[derive(Debug, Clone, Args)]
pub struct ProviderArgs {
    /// Provider configuration file (TOML; see the README). Default:
    /// `taskrunner.toml` if it exists, else one OpenAI-compatible provider from
    /// OPENAI_BASE_URL and OPENAI_API_KEY if either is set. The `echo` model
    /// is always served.
    #[arg(long = "config", env = "TASKRUNNER_CONFIG")]
    pub config: Option<PathBuf>,
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL. The database is created if it does not exist
    /// and the role may create it. When unset: the server at libpq's default
    /// address (PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD; else
    /// postgres@localhost:5432/taskrunner), or, if nothing answers there, a
    /// private cluster in the data directory (see --embedded-postgres).
    #[arg(
        id = "database_url",
        long = "database-url",
        value_name = "DATABASE_URL",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub configured_url: Option<String>,

    /// The URL every connection uses: DATABASE_URL as given, or what start-up
    /// chose when it is unset (`db::embedded::resolve`).
    #[arg(skip)]
    pub database_url: String,

    /// When to run a private PostgreSQL cluster instead of reaching a server:
    /// `auto` when DATABASE_URL is unset and nothing answers at the default
    /// address; `always` (DATABASE_URL must then be unset); `never`.
    #[arg(long, env = "TASKRUNNER_EMBEDDED_POSTGRES", value_enum, default_value_t = EmbeddedPostgres::Auto)]
    pub embedded_postgres: EmbeddedPostgres,

    /// Where the private cluster keeps its data, log and locks: created on
    /// first use, reused later. Processes started on the same directory
    /// share one cluster.
    #[arg(long, env = "TASKRUNNER_DATA_DIR", default_value = ".taskrunner")]
    pub data_dir: PathBuf,

    /// Where PostgreSQL's server programs (initdb, pg_ctl, postgres) are, for
    /// the private cluster. Default: `pg_config --bindir`, then PATH, then the
    /// usual install paths (/usr/lib/postgresql/*/bin, /usr/pgsql-*/bin,
    /// Homebrew's), newest version first.
    #[arg(long, env = "TASKRUNNER_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,

    /// Most database connections the API keeps open (the queue has its own pool).
    #[arg(long, env = "TASKRUNNER_DB_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub db_pool_size: u16,

    /// Seconds to wait for a database connection (to open one, or for a free
    /// one in the pool) before a request is answered SERVICE_UNAVAILABLE.
    #[arg(long, env = "TASKRUNNER_DB_TIMEOUT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_timeout_seconds: u64,

    /// Longest one SQL statement may run, in milliseconds, before PostgreSQL
    /// stops it (the request gets a coded error). Bounds what one expensive
    /// request can cost everyone else.
    #[arg(long, env = "TASKRUNNER_DB_STATEMENT_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub db_statement_timeout_ms: u64,

    /// Database connections kept for the queue alone (claims, heartbeats,
    /// outcomes, rescues), apart from the API's pool, so that no API load can
    /// delay a heartbeat.
    #[arg(long, env = "TASKRUNNER_DB_QUEUE_POOL_SIZE", default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..))]
    pub db_queue_pool_size: u16,

    /// Most database connections one API request may hold at once; its other
    /// fields wait for one of them, so no single request can take the pool.
    #[arg(long, env = "TASKRUNNER_DB_CONNECTIONS_PER_REQUEST", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub db_connections_per_request: u16,

    /// How many times to try reaching the database at start-up before giving up
    /// (waits grow from 0.5 s to 5 s between tries).
    #[arg(long, env = "TASKRUNNER_DB_CONNECT_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_connect_attempts: u32,
}

impl DatabaseArgs {
    /// Options for `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        DatabaseArgs {
            configured_url: Some(url.clone()),
            database_url: url,
            embedded_postgres: EmbeddedPostgres::Auto,
            data_dir: PathBuf::from(".taskrunner"),
            postgres_bin_dir: None,
            db_pool_size: 10,
            db_timeout_seconds: 5,
            db_statement_timeout_ms: 5000,
            db_queue_pool_size: 4,
            db_connections_per_request: 2,
            db_connect_attempts: 10,
        }
    }

    /// How long to wait for a connection.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.db_timeout_seconds)
    }

    /// How long one statement may run.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.db_statement_timeout_ms)
    }
}

/// When to run a private PostgreSQL cluster (`--embedded-postgres`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbeddedPostgres {
    /// When DATABASE_URL is unset and no server answers at the default address.
    Auto,
    /// Whenever DATABASE_URL is unset, even if a server answers.
    Always,
    /// Never: reach the server at DATABASE_URL or the default address.
    Never,
}

/// How to log.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format: `human` (readable lines) or `json` (one object per line, for
    /// log collectors). What is logged is filtered by RUST_LOG (default `info`).
    #[arg(long, env = "TASKRUNNER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl WorkerArgs {
    /// The settings of a worker, in the units it uses.
    pub fn worker_config(&self) -> crate::queue::WorkerConfig {
        crate::queue::WorkerConfig {
            slots: self.workers,
            lease: Duration::from_secs(self.lease_seconds),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            default_timeout: Duration::from_secs(self.task_timeout_seconds),
            claim_batch: usize::try_from(self.claim_batch).unwrap_or(512),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            backoff: crate::queue::Backoff::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_subcommand_means_serve_with_defaults() {
        let cli = Cli::try_parse_from(["taskrunner"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.bind.to_string(), "127.0.0.1:8000");
        let database = &cli.serve.run.database;
        assert_eq!(database.embedded_postgres, EmbeddedPostgres::Auto);
        assert_eq!(database.data_dir, PathBuf::from(".taskrunner"));
        assert_eq!(
            cli.serve.graphiql_cdn.as_str(),
            crate::http::DEFAULT_GRAPHIQL_CDN
        );
        assert_eq!(
            cli.serve.mcp_allowed_hosts,
            ["localhost", "127.0.0.1", "[::1]"]
        );
    }

    #[test]
    fn tokens_are_on_by_default_unless_bound_to_the_loopback() {
        let mode = |args: &[&str]| {
            let cli = Cli::try_parse_from(["taskrunner", "serve"].iter().chain(args)).unwrap();
            let Some(Command::Serve(serve)) = cli.command else {
                panic!("serve parses");
            };
            serve.auth_mode()
        };
        assert_eq!(mode(&[]), AuthMode::Off);
        assert_eq!(mode(&["--bind", "127.0.0.2:80"]), AuthMode::Off);
        assert_eq!(mode(&["--bind", "[::1]:80"]), AuthMode::Off);
        assert_eq!(mode(&["--bind", "0.0.0.0:80"]), AuthMode::Tokens);
        assert_eq!(mode(&["--bind", "[::]:80"]), AuthMode::Tokens);
        assert_eq!(mode(&["--bind", "10.1.2.3:80"]), AuthMode::Tokens);
        assert_eq!(
            mode(&["--bind", "0.0.0.0:80", "--auth", "off"]),
            AuthMode::Off
        );
        assert_eq!(mode(&["--auth", "tokens"]), AuthMode::Tokens);
    }

    #[test]
    fn the_graphiql_cdn_is_checked_when_parsed() {
        let cli = Cli::try_parse_from([
            "taskrunner",
            "serve",
            "--graphiql-cdn",
            "http://127.0.0.1:9000/",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Some(Command::Serve(serve)) if serve.graphiql_cdn.as_str() == "http://127.0.0.1:9000")
        );
        let refused = Cli::try_parse_from(["taskrunner", "serve", "--graphiql-cdn", "not a url"])
            .unwrap_err();
        assert!(refused.to_string().contains("not a URL"), "{refused}");
    }

    #[test]
    fn mcp_allowed_hosts_are_checked() {
        let cli = Cli::try_parse_from([
            "taskrunner",
            "serve",
            "--mcp-allowed-hosts",
            "Tasks.Example.com, 10.0.0.5:8000,*",
        ])
        .unwrap();
        let Some(Command::Serve(serve)) = cli.command else {
            panic!("serve parses");
        };
        assert_eq!(
            serve.mcp_allowed_hosts,
            ["tasks.example.com", "10.0.0.5:8000", "*"]
        );
        for bad in ["", "http://x", "user@host", "a b"] {
            assert!(
                Cli::try_parse_from(["taskrunner", "serve", "--mcp-allowed-hosts", bad]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn subcommands_parse() {
        let cli =
            Cli::try_parse_from(["taskrunner", "migrate", "--database-url", "postgres://x/y"])
                .unwrap();
        assert!(
            matches!(cli.command, Some(Command::Migrate(db)) if db.configured_url.as_deref() == Some("postgres://x/y"))
        );
        let cli = Cli::try_parse_from([
            "taskrunner",
            "worker",
            "--workers",
            "500",
            "--lease-seconds",
            "10",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Some(Command::Worker(w)) if w.run.worker.workers == 500 && w.run.worker.lease_seconds == 10 && w.metrics_bind.to_string() == "127.0.0.1:9464")
        );
        let cli =
            Cli::try_parse_from(["taskrunner", "worker", "--metrics-bind", "0.0.0.0:0"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Worker(w)) if w.metrics_bind.to_string() == "0.0.0.0:0")
        );
        assert!(
            Cli::try_parse_from(["taskrunner", "serve", "--metrics-bind", "127.0.0.1:0"]).is_err()
        );
        let cli =
            Cli::try_parse_from(["taskrunner", "mcp", "--database-url", "postgres://x/y"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Mcp(mcp)) if mcp.database.configured_url.as_deref() == Some("postgres://x/y"))
        );
        let cli = Cli::try_parse_from(["taskrunner", "schema", "--log-format", "json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Schema)));
        assert_eq!(cli.log.log_format, LogFormat::Json);
    }

    #[test]
    fn healthcheck_parses_and_reads_the_bind_of_serve() {
        let cli = Cli::try_parse_from(["taskrunner", "healthcheck"]).unwrap();
        let Some(Command::Healthcheck(check)) = cli.command else {
            panic!("healthcheck parses");
        };
        assert_eq!(check.url, None);
        assert_eq!(check.bind.to_string(), DEFAULT_BIND);
        assert_eq!(check.timeout_seconds, 5);
        let cli = Cli::try_parse_from([
            "taskrunner",
            "healthcheck",
            "http://api:8000",
            "--timeout-seconds",
            "2",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Some(Command::Healthcheck(c)) if c.url.as_deref() == Some("http://api:8000") && c.timeout_seconds == 2)
        );
        assert!(
            Cli::try_parse_from(["taskrunner", "healthcheck", "--timeout-seconds", "0"]).is_err()
        );
    }

    #[test]
    fn embedded_postgres_options_parse() {
        let cli = Cli::try_parse_from([
            "taskrunner",
            "migrate",
            "--embedded-postgres",
            "always",
            "--data-dir",
            "/srv/tasks",
        ])
        .unwrap();
        let Some(Command::Migrate(database)) = cli.command else {
            panic!("migrate parses");
        };
        assert_eq!(database.embedded_postgres, EmbeddedPostgres::Always);
        assert_eq!(database.data_dir, PathBuf::from("/srv/tasks"));
        assert!(
            Cli::try_parse_from(["taskrunner", "worker", "--embedded-postgres", "sometimes"])
                .is_err()
        );
    }

    #[test]
    fn a_healthcheck_command_line_is_told_apart() {
        let names = |args: &[&str]| names_healthcheck(args.iter().map(std::ffi::OsString::from));
        assert!(names(&["healthcheck"]));
        assert!(names(&["healthcheck", "--bogus"]));
        assert!(names(&["--log-format", "json", "healthcheck"]));
        assert!(names(&["--log-format=json", "healthcheck"]));
        assert!(!names(&["serve", "healthcheck"]));
        assert!(!names(&["--bind", "x"]));
        assert!(!names(&[]));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

/// What `taskrunner tenant` does.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant if it is missing and set its quotas; a quota not
    /// given stays as it is. Over a quota, createTask fails RATE_LIMITED.
    Set(TenantSetArgs),
    /// List the tenants: name, quotas and PENDING tasks.
    List(DatabaseArgs),
}

/// Options of `taskrunner tenant set`.
#[derive(Debug, Clone, Args)]
pub struct TenantSetArgs {
    /// The tenant's name: lowercase letters, digits, `_`, `.` and `-`, up to 63.
    pub name: String,

    /// Most tasks the tenant may have PENDING at once, or `none` for no limit.
    #[arg(long, value_name = "N|none", value_parser = crate::tenants::settings::parse_limit)]
    pub max_pending: Option<crate::tenants::settings::Limit>,

    /// Most tasks the tenant may create a minute (a whole minute's worth may
    /// come at once), or `none` for no limit.
    #[arg(long, value_name = "N|none", value_parser = crate::tenants::settings::parse_limit)]
    pub creates_per_minute: Option<crate::tenants::settings::Limit>,

    #[command(flatten)]
    pub database: DatabaseArgs,
}
