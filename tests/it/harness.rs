//! The test harness: a real PostgreSQL, one fresh database per test.
//!
//! The server comes from `TEST_DATABASE_URL`, else `DATABASE_URL`, else the
//! local default. A template database is migrated once (named after a hash
//! of the migrations, so a changed migration gets a new template); each test
//! clones it with `CREATE DATABASE … TEMPLATE …` and drops its clone when done,
//! so tests run in parallel and never see each other's rows.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use async_graphql::Variables;
use serde_json::{Value, json};
use std::time::Duration;
use taskrunner::AppState;
use taskrunner::config::DatabaseArgs;
use taskrunner::db::{self, DbPool, migrations};
use taskrunner::graphql::{self, TaskRunnerSchema};

use taskrunner::events::{EVENTS_CHANNEL, Listener};
use taskrunner::output::OUTPUT_CHANNEL;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

/// The server's URL, pointing at its maintenance database.
pub fn server_url() -> String {
    let url = std::env::var("TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| taskrunner::config::DEFAULT_DATABASE_URL.to_owned());
    with_database(&url, "postgres")
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..path_start])
}

/// Runs one statement on the server's maintenance database.
pub async fn admin(sql: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(&server_url(), NoTls).await?;
    let driver = tokio::spawn(connection);
    let outcome = client.batch_execute(sql).await;
    drop(client);
    let _ = driver.await;
    outcome
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// The migrated template database, made on first use.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("taskrunner_test_tpl_{:016x}", migrations_hash());
            let (client, connection) = tokio_postgres::connect(&server_url(), NoTls)
                .await
                .expect("the test PostgreSQL server is reachable (set TEST_DATABASE_URL)");
            let driver = tokio::spawn(connection);
            // Serialises test processes that start together.
            client
                .batch_execute("SELECT pg_advisory_lock(7316)")
                .await
                .expect("lock");
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .expect("look up template")
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                for sql in [
                    format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"),
                    format!("CREATE DATABASE {building}"),
                ] {
                    client.batch_execute(&sql).await.expect("create template");
                }
                let conn = db::establish(
                    &with_database(&server_url(), &building),
                    std::time::Duration::from_secs(10),
                )
                .await
                .expect("connect to template");
                migrations::run_pending(conn)
                    .await
                    .expect("migrate template");
                client
                    .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {name}"))
                    .await
                    .expect("publish template");
            }
            client
                .batch_execute("SELECT pg_advisory_unlock(7316)")
                .await
                .expect("unlock");
            drop(client);
            let _ = driver.await;
            name
        })
        .await
}

fn migrations_hash() -> u64 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut files: Vec<_> = walk(std::path::Path::new(dir));
    files.sort();
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file)
            .expect("read migration")
            .hash(&mut hasher);
    }
    hasher.finish()
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("read migrations dir")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A database of the test's own, dropped when this value is.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A fresh clone of the migrated template.
    pub async fn migrated() -> Self {
        let template = template().await;
        let db = TestDb::named_fresh();
        admin(&format!("CREATE DATABASE {} TEMPLATE {template}", db.name))
            .await
            .expect("clone template");
        db
    }

    /// A name for a database that does not exist yet (nothing is created).
    pub fn named_fresh() -> Self {
        let name = format!(
            "taskrunner_test_{}_{}",
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        let url = with_database(&server_url(), &name);
        TestDb { name, url }
    }

    /// An empty database: created, not migrated.
    pub async fn empty() -> Self {
        let db = TestDb::named_fresh();
        admin(&format!("CREATE DATABASE {}", db.name))
            .await
            .expect("create database");
        db
    }

    /// Database options pointing at this database.
    pub fn args(&self) -> DatabaseArgs {
        let mut args = DatabaseArgs::new(&self.url);
        args.db_pool_size = 5;
        args
    }

    /// A pool on this database.
    pub fn pool(&self) -> DbPool {
        db::build_pool(&self.args()).expect("pool")
    }

    /// A plain driver connection, for assertions in SQL.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside (or outside) a runtime; use a thread with its own.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(admin(&sql)))
        })
        .join();
        if !matches!(dropped, Ok(Ok(Ok(())))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}

/// The service in-process over a test database.
pub struct TestApp {
    pub schema: TaskRunnerSchema,
    pub state: AppState,
    pub db: TestDb,
}

impl TestApp {
    pub async fn new() -> Self {
        let db = TestDb::migrated().await;
        let state = AppState::new(db.pool(), any_model_router());
        TestApp {
            schema: graphql::schema(state.clone()),
            state,
            db,
        }
    }

    /// The whole HTTP application, as served.
    pub fn router(&self) -> axum::Router {
        taskrunner::http::router(self.state.clone())
    }

    /// Serves the application on a free port of 127.0.0.1 as `serve` does,
    /// with its own listening connection for subscribers' events and
    /// answers' text; both stop when the returned value is dropped.
    pub async fn serve(&self) -> Served {
        self.serve_on(&self.db.args().database_url).await
    }

    /// [`TestApp::serve`], with the listener connecting to `database_url`
    /// (a proxy in front of the test database, say).
    pub async fn serve_on(&self, database_url: &str) -> Served {
        let stop = CancellationToken::new();
        let listener = Listener::start(
            database_url.to_owned(),
            Duration::from_secs(5),
            vec![EVENTS_CHANNEL, OUTPUT_CHANNEL],
            stop.clone(),
        )
        .await;
        self.state.listen_on(&listener);
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let address = socket.local_addr().expect("bound address").to_string();
        let app = self.router();
        let until = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let _ = axum::serve(socket, app).with_graceful_shutdown(until).await;
        });
        Served { address, stop }
    }

    /// Runs a GraphQL request and returns the response as JSON (`data`, `errors`).
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(&taskrunner::auth::Principal::operator(), query, variables)
            .await
    }

    /// Runs a GraphQL request as `principal` and returns the response as JSON.
    pub async fn gql_as(
        &self,
        principal: &taskrunner::auth::Principal,
        query: &str,
        variables: Value,
    ) -> Value {
        let request = async_graphql::Request::new(query)
            .variables(Variables::from_json(variables))
            .data(principal.clone());
        serde_json::to_value(self.schema.execute(request).await).expect("response is JSON")
    }

    /// Runs a request that must succeed, and returns its `data`.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let response = self.gql(query, variables).await;
        assert!(
            response.get("errors").is_none(),
            "unexpected errors: {response:#}"
        );
        response["data"].clone()
    }

    /// Creates a task through the API and returns it.
    pub async fn create(&self, input: Value) -> Value {
        let data = self
            .data(
                "mutation($input: CreateTaskInput!) { createTask(input: $input) { id prompt model priority status attempts maxAttempts createdAt updatedAt } }",
                json!({ "input": input }),
            )
            .await;
        data["createTask"].clone()
    }
}

/// A router whose `echo` provider serves every model name, so tests can use
/// any name; routing itself is tested with real routes.
pub fn any_model_router() -> std::sync::Arc<taskrunner::providers::routing::ModelRouter> {
    use taskrunner::providers::config::{ProvidersFile, router_from};
    let file: ProvidersFile =
        toml::from_str("[[provider]]\nname = \"echo\"\nkind = \"echo\"\nmodel_prefixes = [\"\"]")
            .expect("test provider configuration");
    std::sync::Arc::new(router_from(file.providers).expect("echo router"))
}

/// The `extensions.code` of a response's first error.
pub fn error_code(response: &Value) -> &str {
    response["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error with a code: {response:#}"))
}

/// The `extensions.field` of a response's first error.
pub fn error_field(response: &Value) -> &str {
    response["errors"][0]["extensions"]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error naming a field: {response:#}"))
}

/// The application served on a port; stops when dropped.
pub struct Served {
    pub address: String,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
