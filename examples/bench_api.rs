//! Load test of a running `taskrunner serve` over HTTP.
//!
//! Seeds the `tasks` table to `--rows` rows straight in PostgreSQL, then drives
//! `POST /graphql` with `--concurrency` workers sharing one keep-alive client,
//! for `--seconds` per scenario, after a warm-up:
//!
//! - `first page`: `tasks(first: 20)`, the newest tasks;
//! - `deep page`: `tasks(first: 20, after: …)` from a cursor 90% of the way down;
//! - `createTask`: the mutation, on the always-served `echo` model (the table
//!   grows by what it inserts; serve with `--workers 0` so that the created
//!   tasks are not run meanwhile and the API is measured alone);
//! - `createTasks`: the same tasks [`BATCH_SIZE`] to a request, to compare
//!   tasks created a second with `createTask`'s;
//! - `interference`: what one client's expensive request does to everyone
//!   else. Other clients read one task (`task(id:)`) at a steady `--rate`,
//!   open loop (a late answer does not delay the next request), and their
//!   p50/p99 are measured three times: alone; beside `--attackers` clients
//!   sending the 2,000-alias `tasks(first: 1) { totalCount }` request back to
//!   back (the request that once held every pooled connection for seconds);
//!   and beside the same clients sending the heaviest request the complexity
//!   limit allows (as many counts as it lets through).
//!
//! It prints requests/s, p50, p99 and errors per scenario (a response with
//! `errors`, no `data`, or a status other than 200 counts as an error), how the
//! machine's CPU was shared between this client, the server and PostgreSQL, and
//! the server's resident memory when given its pid. `benches/run.sh` runs it
//! beside `pgbench`; BENCHMARKS.md records the figures.
//!
//! ```text
//! cargo run --release --example bench_api -- \
//!     --url http://127.0.0.1:8000 \
//!     --database-url postgres://postgres@127.0.0.1:5432/taskrunner_bench \
//!     --concurrency 32 --seconds 10 --rows 100000 --server-pid "$SERVER_PID"
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;
use taskrunner::tasks::listing::{Cursor, TaskOrderField};
use tokio_postgres::NoTls;

/// The page query of both list scenarios: the fields a task list shows.
const LIST_QUERY: &str = "query List($first: Int!, $after: String) { \
    tasks(first: $first, after: $after) { \
        nodes { id prompt model priority status createdAt } \
        pageInfo { endCursor } } }";

/// The mutation of the `createTask` scenario.
const CREATE_MUTATION: &str = "mutation Create($input: CreateTaskInput!) { \
    createTask(input: $input) { id status createdAt } }";

/// The mutation of the `createTasks` scenario: the fields `createTask` asks for.
const CREATE_BATCH_MUTATION: &str = "mutation CreateMany($inputs: [CreateTaskInput!]!) { \
    createTasks(inputs: $inputs) { id status createdAt } }";

/// The tasks one `createTasks` request creates: the most it may.
const BATCH_SIZE: u64 = 1_000;

/// The rows a list page asks for.
const PAGE_SIZE: usize = 20;

/// How far down the list the deep page starts, in tenths.
const DEEP_TENTHS: i64 = 9;

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("error: {error:#}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "\
usage: bench_api [options]

  --url URL              the server (env BENCH_URL; default http://127.0.0.1:8000)
  --database-url URL     its database, for seeding (env DATABASE_URL;
                         default postgres://postgres@127.0.0.1:5432/taskrunner_bench)
  --concurrency N        concurrent connections (default 32)
  --seconds N            measured seconds per scenario (default 10)
  --warmup N             unmeasured seconds before each scenario (default 2)
  --rows N               rows to seed the table to (default 100000)
  --reseed               empty the table and seed it afresh (repeatable figures)
  --server-pid PID       report the server's CPU share and memory (VmRSS, VmHWM)
  --scenarios LIST       comma-separated, from first,deep,create,batch,interference
                         (default all)
  --rate N               interference: other clients' requests per second (default 200)
  --attackers N          interference: clients sending the expensive request (default 1)

Environment: BENCH_TOKEN, an API token every request carries (Authorization: Bearer).";

/// The command line.
#[derive(Debug, Clone)]
struct Options {
    url: String,
    database_url: String,
    concurrency: usize,
    seconds: u64,
    warmup: u64,
    rows: i64,
    reseed: bool,
    server_pid: Option<u32>,
    scenarios: Vec<Scenario>,
    /// Whether to run the interference scenario (after the others).
    interference: bool,
    rate: f64,
    attackers: usize,
}

impl Options {
    /// Reads the options; `None` when help was asked for.
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Self>> {
        let mut options = Options {
            url: std::env::var("BENCH_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into()),
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/taskrunner_bench".into()),
            concurrency: 32,
            seconds: 10,
            warmup: 2,
            rows: 100_000,
            reseed: false,
            server_pid: None,
            scenarios: Scenario::ALL.to_vec(),
            interference: true,
            rate: 200.0,
            attackers: 1,
        };
        while let Some(flag) = args.next() {
            let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "-h" | "--help" => return Ok(None),
                "--url" => options.url = value()?,
                "--database-url" => options.database_url = value()?,
                "--concurrency" => options.concurrency = number(&flag, &value()?)?,
                "--seconds" => options.seconds = number(&flag, &value()?)?,
                "--warmup" => options.warmup = number(&flag, &value()?)?,
                "--rows" => options.rows = number(&flag, &value()?)?,
                "--reseed" => options.reseed = true,
                "--server-pid" => options.server_pid = Some(number(&flag, &value()?)?),
                "--scenarios" => {
                    let names = value()?;
                    options.interference =
                        names.split(',').any(|name| name.trim() == "interference");
                    options.scenarios = names
                        .split(',')
                        .filter(|name| name.trim() != "interference")
                        .map(Scenario::from_name)
                        .collect::<anyhow::Result<_>>()?;
                }
                "--rate" => options.rate = number(&flag, &value()?)?,
                "--attackers" => options.attackers = number(&flag, &value()?)?,
                other => bail!("unknown option {other:?}"),
            }
        }
        if options.concurrency == 0 || options.seconds == 0 || options.rows < 1 {
            bail!("--concurrency, --seconds and --rows must be at least 1");
        }
        if !(options.rate >= 1.0 && options.rate <= 100_000.0) || options.attackers == 0 {
            bail!("--rate must be 1 to 100000 and --attackers at least 1");
        }
        options.url = format!("{}/graphql", options.url.trim_end_matches('/'));
        Ok(Some(options))
    }
}

/// Parses the value of a numeric flag.
fn number<T: std::str::FromStr>(flag: &str, text: &str) -> anyhow::Result<T> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{flag} wants a number, got {text:?}"))
}

/// One kind of request the benchmark sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    FirstPage,
    DeepPage,
    CreateTask,
    CreateTasks,
}

impl Scenario {
    /// Every scenario, in the order they run: the reads first, on the table as
    /// seeded, then the writes.
    const ALL: [Scenario; 4] = [
        Scenario::FirstPage,
        Scenario::DeepPage,
        Scenario::CreateTask,
        Scenario::CreateTasks,
    ];

    fn from_name(name: &str) -> anyhow::Result<Self> {
        match name.trim() {
            "first" => Ok(Scenario::FirstPage),
            "deep" => Ok(Scenario::DeepPage),
            "create" => Ok(Scenario::CreateTask),
            "batch" => Ok(Scenario::CreateTasks),
            other => {
                bail!("unknown scenario {other:?} (first, deep, create, batch or interference)")
            }
        }
    }

    /// The name in reports.
    fn label(self) -> &'static str {
        match self {
            Scenario::FirstPage => "tasks(first: 20)",
            Scenario::DeepPage => "tasks(first: 20, after: 90%)",
            Scenario::CreateTask => "createTask",
            Scenario::CreateTasks => "createTasks (1,000 a request)",
        }
    }

    /// The tasks one request creates.
    fn tasks_per_request(self) -> u64 {
        match self {
            Scenario::FirstPage | Scenario::DeepPage => 0,
            Scenario::CreateTask => 1,
            Scenario::CreateTasks => BATCH_SIZE,
        }
    }
}

/// Seeds, checks, then measures every scenario and prints the figures.
async fn run(options: &Options) -> anyhow::Result<()> {
    let database = connect(&options.database_url).await?;
    let rows = seed(&database, options.rows, options.reseed).await?;
    fold_counts(&options.database_url).await?;
    let deep_cursor = deep_cursor(&database, rows).await?;
    let some_task: i64 = database
        .query_one("SELECT min(id) FROM tasks", &[])
        .await
        .context("could not find a task to read")?
        .get(0);
    drop(database);

    // With a token (env BENCH_TOKEN), every request carries it, as a
    // client of a server with tokens on does.
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = std::env::var("BENCH_TOKEN").ok().filter(|t| !t.is_empty()) {
        let value = format!("Bearer {token}")
            .parse()
            .context("BENCH_TOKEN is not a valid header value")?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(options.concurrency.max(32))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("could not build the HTTP client")?;
    let requests = Arc::new(Requests::new(&deep_cursor));
    check_server(&client, &options.url, &requests).await?;

    println!(
        "server {} · {} connections · {} s per scenario after {} s warm-up · {rows} rows seeded",
        options.url, options.concurrency, options.seconds, options.warmup
    );
    let mut results = Vec::new();
    for &scenario in &options.scenarios {
        let load = Load {
            client: &client,
            url: &options.url,
            requests: &requests,
            concurrency: options.concurrency,
        };
        load.drive(scenario, Duration::from_secs(options.warmup))
            .await?;
        let before = CpuSnapshot::take(options.server_pid);
        let measured = load
            .drive(scenario, Duration::from_secs(options.seconds))
            .await?;
        let cpu = CpuSnapshot::take(options.server_pid).since(&before);
        let memory = options.server_pid.and_then(Memory::of);
        results.push((measured, cpu, memory));
    }
    if !results.is_empty() {
        report(&results, options.server_pid);
    }
    if options.interference {
        interference(&client, options, some_task).await?;
    }
    Ok(())
}

/// One phase of the interference scenario: what the other clients saw, and
/// what became of the expensive requests sent meanwhile.
struct Phase {
    label: &'static str,
    /// The other clients' latencies (successful requests), sorted.
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    /// How the expensive requests were answered ("ok", an error code, …), counted.
    expensive: BTreeMap<String, u64>,
    /// Their latencies, sorted.
    expensive_latencies: Vec<Duration>,
}

/// `n` aliased `tasks(first: 1) { totalCount }` fields, as one request body.
fn counts_request(n: usize) -> String {
    let fields: String = (0..n)
        .map(|i| format!("c{i}: tasks(first: 1) {{ totalCount }} "))
        .collect();
    json!({ "query": format!("{{ {fields}}}") }).to_string()
}

/// Measures other clients' latency alone, beside the 2,000-count request,
/// and beside the heaviest request the complexity limit allows.
async fn interference(
    client: &reqwest::Client,
    options: &Options,
    task_id: i64,
) -> anyhow::Result<()> {
    // A count costs TOTAL_COUNT_COST, its page 1: as many as fit.
    let allowed = taskrunner::graphql::MAX_COMPLEXITY / (taskrunner::graphql::TOTAL_COUNT_COST + 1);
    let plain = json!({
        "query": "query($id: ID!) { task(id: $id) { id status } }",
        "variables": { "id": task_id.to_string() },
    })
    .to_string();
    let phases: [(&'static str, Option<String>); 3] = [
        ("alone", None),
        ("beside 2,000 counts", Some(counts_request(2_000))),
        ("beside the most allowed", Some(counts_request(allowed))),
    ];
    let mut results = Vec::new();
    for (label, expensive) in phases {
        let warmup = Duration::from_secs(options.warmup);
        let measured = Duration::from_secs(options.seconds);
        let _ = interference_phase(client, options, label, &plain, expensive.as_deref(), warmup)
            .await?;
        results.push(
            interference_phase(
                client,
                options,
                label,
                &plain,
                expensive.as_deref(),
                measured,
            )
            .await?,
        );
    }

    println!();
    println!(
        "interference: other clients read one task at {}/s, open loop; {} client(s) send the \
         expensive request back to back (2,000 counts, then {allowed}, the most the limit allows)",
        options.rate, options.attackers
    );
    let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;
    let percentile = |sorted: &[Duration], fraction: f64| -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let last = sorted.len() - 1;
        sorted[(((last as f64) * fraction).round() as usize).min(last)]
    };
    println!(
        "{:<26} {:>8} {:>7} {:>9} {:>9} {:>9} {:>10} {:>11}  answered as",
        "phase", "reads", "errors", "p50 ms", "p99 ms", "max ms", "expensive", "its p50 ms"
    );
    for phase in &results {
        let answered: Vec<String> = phase
            .expensive
            .iter()
            .map(|(outcome, n)| format!("{n} {outcome}"))
            .collect();
        println!(
            "{:<26} {:>8} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>10} {:>11.2}  {}",
            phase.label,
            phase.latencies.len(),
            phase.errors,
            millis(percentile(&phase.latencies, 0.50)),
            millis(percentile(&phase.latencies, 0.99)),
            millis(percentile(&phase.latencies, 1.0)),
            phase.expensive_latencies.len(),
            millis(percentile(&phase.expensive_latencies, 0.50)),
            if answered.is_empty() {
                "-".to_owned()
            } else {
                answered.join(", ")
            },
        );
    }
    for phase in &results {
        if let Some(error) = &phase.first_error {
            let shown: String = error.chars().take(500).collect();
            println!("first error of the reads {}: {shown}", phase.label);
        }
    }
    Ok(())
}

/// Reads at a steady rate for `duration`, beside clients sending `expensive`
/// back to back if given.
async fn interference_phase(
    client: &reqwest::Client,
    options: &Options,
    label: &'static str,
    plain: &str,
    expensive: Option<&str>,
    duration: Duration,
) -> anyhow::Result<Phase> {
    let stop = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = match expensive {
        None => Vec::new(),
        Some(body) => (0..options.attackers)
            .map(|_| {
                let (client, url, body, stop) = (
                    client.clone(),
                    options.url.clone(),
                    body.to_owned(),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    let mut outcomes: Vec<(String, Duration)> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let outcome = send_expensive(&client, &url, body.clone()).await;
                        outcomes.push((outcome, sent.elapsed()));
                    }
                    outcomes
                })
            })
            .collect(),
    };

    // Open loop: each read is due at its own time, and its latency counts
    // from then, so a server that stalls is charged for every read it delays.
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut reads = Vec::new();
    while started.elapsed() < duration {
        let due = ticker.tick().await;
        let (client, url, body) = (client.clone(), options.url.clone(), plain.to_owned());
        reads.push(tokio::spawn(async move {
            send(&client, &url, body).await.map(|()| due.elapsed())
        }));
    }
    let mut phase = Phase {
        label,
        latencies: Vec::new(),
        errors: 0,
        first_error: None,
        expensive: BTreeMap::new(),
        expensive_latencies: Vec::new(),
    };
    for read in reads {
        match read.await.context("a read panicked")? {
            Ok(latency) => phase.latencies.push(latency),
            Err(error) => {
                phase.errors += 1;
                phase.first_error.get_or_insert(format!("{error:#}"));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        for (outcome, latency) in attacker.await.context("an expensive client panicked")? {
            *phase.expensive.entry(outcome).or_default() += 1;
            phase.expensive_latencies.push(latency);
        }
    }
    phase.latencies.sort_unstable();
    phase.expensive_latencies.sort_unstable();
    Ok(phase)
}

/// Sends an expensive request; names how it was answered: "ok", the first
/// error's code, or what went wrong on the way.
async fn send_expensive(client: &reqwest::Client, url: &str, body: String) -> String {
    let response = match client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(_) => return "not answered".to_owned(),
    };
    let status = response.status();
    let Ok(reply) = response.json::<serde_json::Value>().await else {
        return format!("HTTP {status}, not JSON");
    };
    match reply["errors"][0]["extensions"]["code"].as_str() {
        Some(code) => code.to_owned(),
        None if reply["data"].is_object() => "ok".to_owned(),
        None => format!("HTTP {status}, no data"),
    }
}

/// Opens a PostgreSQL connection, its driver running in the background.
async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("could not connect to {url}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            eprintln!("database connection lost: {error}");
        }
    });
    Ok(client)
}

/// Brings the table to at least `rows` rows (exactly `rows` after `reseed`)
/// with one `INSERT … SELECT generate_series`, and returns how many it holds.
///
/// Seeded tasks are spread 30 seconds apart (with jitter) up to now, inserted
/// oldest first, as a live table fills; most have finished, as in a queue that
/// keeps up. The server must already have migrated the database.
async fn seed(database: &tokio_postgres::Client, rows: i64, reseed: bool) -> anyhow::Result<i64> {
    if reseed {
        // TRUNCATE fires no DELETE trigger, so the per-status counts go too.
        database
            .batch_execute(
                "TRUNCATE tasks, task_partial_results, task_status_counts, task_status_deltas \
                 RESTART IDENTITY",
            )
            .await
            .context("could not empty the tasks table (has the server migrated it?)")?;
    }
    let existing: i64 = database
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .context("could not count tasks (has the server migrated the database?)")?
        .get(0);
    if existing < rows {
        let started = Instant::now();
        database
            .execute(SEED_SQL, &[&(existing + 1), &rows])
            .await
            .context("could not seed the tasks table")?;
        println!(
            "seeded {} tasks in {:.1} s",
            rows - existing,
            started.elapsed().as_secs_f64()
        );
    }
    // Fresh statistics and visibility map, as autovacuum would give a table at rest.
    database
        .batch_execute("VACUUM ANALYZE tasks")
        .await
        .context("could not vacuum the tasks table")?;
    Ok(database
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .context("could not count tasks")?
        .get(0))
}

/// Folds the status counters' deltas the seed's inserts appended, as a
/// deployment's workers do every second: a table at rest has them folded, and
/// a `--workers 0` server under test folds none.
async fn fold_counts(database_url: &str) -> anyhow::Result<()> {
    let mut conn = taskrunner::db::establish(database_url, Duration::from_secs(10))
        .await
        .context("could not connect to fold the status counters")?;
    taskrunner::queue::store::fold_status_counts(&mut conn)
        .await
        .context("could not fold the status counters")?;
    Ok(())
}

/// Rows `$1..=$2` of a realistic table: row `$2` is the newest, created just now.
const SEED_SQL: &str = "
INSERT INTO tasks (prompt, model, priority, status, result, error, attempts,
                   max_attempts, created_at, updated_at, started_at, finished_at, run_at)
SELECT 'Seeded task ' || g || ': summarise the attached quarterly report in three bullet points.',
       (ARRAY['gpt-4o-mini', 'llama3.1:8b', 'claude-3-haiku', 'mistral-small'])[1 + g % 4],
       1 + g % 10,
       state::task_status,
       CASE WHEN state = 'succeeded'
            THEN 'Revenue grew 12%; costs were flat; the outlook for next quarter is unchanged.' END,
       CASE WHEN state = 'failed' THEN 'provider returned 503 three times' END,
       CASE state WHEN 'pending' THEN 0 WHEN 'failed' THEN 3 ELSE 1 END,
       3,
       created,
       CASE WHEN state = 'pending' THEN created ELSE created + interval '9 seconds' END,
       CASE WHEN state = 'pending' THEN NULL ELSE created + interval '1 second' END,
       CASE WHEN state = 'pending' THEN NULL ELSE created + interval '9 seconds' END,
       created
FROM generate_series($1::bigint, $2::bigint) AS g,
     LATERAL (SELECT now() - make_interval(secs => ($2 - g) * 30 + random() * 20) AS created,
                     CASE WHEN g % 20 = 0 THEN 'failed'
                          WHEN g % 10 = 3 THEN 'pending'
                          ELSE 'succeeded' END AS state) AS row";

/// The cursor of the task 90% of the way down the default ordering (newest
/// first), as the server would issue it.
async fn deep_cursor(database: &tokio_postgres::Client, rows: i64) -> anyhow::Result<String> {
    let row = database
        .query_one(
            "SELECT (extract(epoch FROM created_at) * 1000000)::bigint, id FROM tasks \
             ORDER BY created_at DESC, id DESC OFFSET $1 LIMIT 1",
            &[&(rows * DEEP_TENTHS / 10)],
        )
        .await
        .context("could not find the deep cursor's task")?;
    Ok(Cursor {
        field: TaskOrderField::CreatedAt,
        key: row.get(0),
        id: row.get(1),
    }
    .encode())
}

/// The request bodies, serialised once (except createTask's, which varies).
struct Requests {
    first_page: String,
    deep_page: String,
}

impl Requests {
    fn new(deep_cursor: &str) -> Self {
        let page = |after: Option<&str>| {
            json!({
                "query": LIST_QUERY,
                "variables": { "first": PAGE_SIZE, "after": after },
            })
            .to_string()
        };
        Requests {
            first_page: page(None),
            deep_page: page(Some(deep_cursor)),
        }
    }

    /// The body of request number `sequence` of `worker`.
    fn body(&self, scenario: Scenario, worker: usize, sequence: u64) -> String {
        match scenario {
            Scenario::FirstPage => self.first_page.clone(),
            Scenario::DeepPage => self.deep_page.clone(),
            Scenario::CreateTask => json!({
                "query": CREATE_MUTATION,
                "variables": { "input": create_input(worker, sequence) },
            })
            .to_string(),
            Scenario::CreateTasks => {
                let inputs: Vec<serde_json::Value> = (0..BATCH_SIZE)
                    .map(|i| create_input(worker, sequence * BATCH_SIZE + i))
                    .collect();
                json!({
                    "query": CREATE_BATCH_MUTATION,
                    "variables": { "inputs": inputs },
                })
                .to_string()
            }
        }
    }
}

/// The input of task number `sequence` of `worker`, in either create scenario.
fn create_input(worker: usize, sequence: u64) -> serde_json::Value {
    json!({
        "prompt": format!("Benchmark task {worker}-{sequence}: translate 'good morning' into French."),
        // Always served, whatever providers the server has.
        "model": "echo",
        "priority": 1 + sequence % 10,
    })
}

/// What the benchmark reads of a GraphQL response.
#[derive(Deserialize)]
struct Reply {
    data: Option<IgnoredAny>,
    errors: Option<IgnoredAny>,
}

/// The list page as the sanity check reads it.
#[derive(Deserialize)]
struct ListReply {
    data: Option<ListData>,
    errors: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ListData {
    tasks: ListPage,
}

#[derive(Deserialize)]
struct ListPage {
    nodes: Vec<IgnoredAny>,
}

/// Fails early, with the server's words, if a list page is not a full page.
async fn check_server(
    client: &reqwest::Client,
    url: &str,
    requests: &Requests,
) -> anyhow::Result<()> {
    for (name, body) in [
        ("first page", &requests.first_page),
        ("deep page", &requests.deep_page),
    ] {
        let text = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .with_context(|| format!("could not reach the server at {url}"))?
            .text()
            .await
            .context("could not read the server's response")?;
        let reply: ListReply = serde_json::from_str(&text)
            .with_context(|| format!("the {name} is not the expected JSON: {text}"))?;
        match reply {
            ListReply {
                data: Some(data),
                errors: None,
            } if data.tasks.nodes.len() == PAGE_SIZE => {}
            _ => bail!("the {name} is not a full page of {PAGE_SIZE} tasks: {text}"),
        }
    }
    Ok(())
}

/// The figures of one scenario.
struct Measured {
    scenario: Scenario,
    /// Latencies of the successful requests, sorted.
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Measured {
    fn requests_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at `fraction` (0 to 1) of the sorted latencies.
    fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let last = self.latencies.len() - 1;
        let index = ((last as f64) * fraction).round() as usize;
        self.latencies[index.min(last)]
    }
}

/// What one worker saw.
#[derive(Default)]
struct WorkerTally {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

impl WorkerTally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }
}

/// A fixed number of workers sending one scenario's requests back to back.
struct Load<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    requests: &'a Arc<Requests>,
    concurrency: usize,
}

impl Load<'_> {
    /// Runs `scenario` for `duration` (requests in flight then are waited for).
    async fn drive(&self, scenario: Scenario, duration: Duration) -> anyhow::Result<Measured> {
        let started = Instant::now();
        let deadline = started + duration;
        let workers: Vec<_> = (0..self.concurrency)
            .map(|worker| {
                let client = self.client.clone();
                let url = self.url.to_owned();
                let requests = Arc::clone(self.requests);
                tokio::spawn(async move {
                    let mut tally = WorkerTally::default();
                    let mut sequence = 0;
                    while Instant::now() < deadline {
                        let body = requests.body(scenario, worker, sequence);
                        sequence += 1;
                        let sent = Instant::now();
                        match send(&client, &url, body).await {
                            Ok(()) => tally.latencies.push(sent.elapsed()),
                            Err(error) => tally.error(format!("{error:#}")),
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut measured = Measured {
            scenario,
            latencies: Vec::new(),
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        };
        for worker in workers {
            let tally = worker.await.context("a load worker panicked")?;
            measured.latencies.extend(tally.latencies);
            measured.errors += tally.errors;
            if measured.first_error.is_none() {
                measured.first_error = tally.first_error;
            }
        }
        measured.elapsed = started.elapsed();
        measured.latencies.sort_unstable();
        Ok(measured)
    }
}

/// Sends one request; an error unless the reply is 200 with data and no errors.
async fn send(client: &reqwest::Client, url: &str, body: String) -> anyhow::Result<()> {
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .context("request failed")?;
    let status = response.status();
    let bytes = response.bytes().await.context("reading the reply failed")?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    match serde_json::from_slice::<Reply>(&bytes) {
        Ok(Reply {
            data: Some(_),
            errors: None,
        }) => Ok(()),
        _ => bail!("GraphQL errors: {}", String::from_utf8_lossy(&bytes)),
    }
}

/// Cumulative CPU time, in clock ticks, of the machine and of the processes
/// taking part. Differences of two snapshots give each one's share of the
/// machine; without `/proc` (not Linux) every figure is zero.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSnapshot {
    /// All CPUs, busy or not.
    total: u64,
    /// All CPUs, idle or waiting for I/O.
    idle: u64,
    /// This benchmark.
    client: u64,
    /// The server, when its pid is known.
    server: u64,
    /// Every process named `postgres` (the server's backends and PostgreSQL's
    /// own processes, and any other database user's backends).
    postgres: u64,
}

impl CpuSnapshot {
    fn take(server_pid: Option<u32>) -> Self {
        let (total, idle) = machine_ticks().unwrap_or_default();
        CpuSnapshot {
            total,
            idle,
            client: process_ticks(Path::new("/proc/self/stat")).map_or(0, |(_, ticks)| ticks),
            server: server_pid
                .and_then(|pid| {
                    process_ticks(&Path::new("/proc").join(pid.to_string()).join("stat"))
                })
                .map_or(0, |(_, ticks)| ticks),
            postgres: postgres_ticks(),
        }
    }

    /// The ticks spent between `earlier` and this snapshot.
    fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        CpuSnapshot {
            total: self.total.saturating_sub(earlier.total),
            idle: self.idle.saturating_sub(earlier.idle),
            client: self.client.saturating_sub(earlier.client),
            server: self.server.saturating_sub(earlier.server),
            postgres: self.postgres.saturating_sub(earlier.postgres),
        }
    }

    /// `ticks` as cores kept busy over the interval (0 to the number of CPUs).
    fn cores(&self, ticks: u64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        ticks as f64 / self.total as f64 * cpu_count() as f64
    }
}

/// (all ticks, idle ticks) from the first line of `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8) // user nice system idle iowait irq softirq steal
        .filter_map(|field| field.parse().ok())
        .collect();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((fields.iter().sum(), idle))
}

/// (command name, user + system ticks) of the process whose `stat` file is `path`.
fn process_ticks(path: &Path) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (head, tail) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    // After the name: state is field 3, utime field 14, stime field 15.
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// The ticks of every live process named `postgres`.
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| process_ticks(&entry.path().join("stat")))
        .filter(|(name, _)| name == "postgres")
        .map(|(_, ticks)| ticks)
        .sum()
}

/// The server's resident memory, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Resident now (VmRSS), in KiB.
    resident_kib: u64,
    /// The most ever resident (VmHWM), in KiB.
    peak_kib: u64,
}

impl Memory {
    fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Memory {
            resident_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }
}

/// Prints the figures, one scenario a row, then the CPU split and memory.
fn report(results: &[(Measured, CpuSnapshot, Option<Memory>)], server_pid: Option<u32>) {
    let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!();
    println!(
        "{:<30} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "requests", "errors", "req/s", "tasks/s", "p50 ms", "p99 ms", "max ms"
    );
    for (measured, _, _) in results {
        let per_request = measured.scenario.tasks_per_request();
        println!(
            "{:<30} {:>9} {:>7} {:>9.0} {:>9} {:>9.2} {:>9.2} {:>9.2}",
            measured.scenario.label(),
            measured.latencies.len(),
            measured.errors,
            measured.requests_per_second(),
            if per_request == 0 {
                "-".to_owned()
            } else {
                format!("{:.0}", measured.requests_per_second() * per_request as f64)
            },
            millis(measured.percentile(0.50)),
            millis(measured.percentile(0.99)),
            millis(measured.percentile(1.0)),
        );
    }
    println!();
    println!("CPU, in cores kept busy (of {}):", cpu_count());
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "scenario", "client", "server", "postgres", "other", "idle"
    );
    for (measured, cpu, _) in results {
        let accounted = cpu.client + cpu.server + cpu.postgres + cpu.idle;
        println!(
            "{:<30} {:>9.2} {:>9} {:>9.2} {:>9.2} {:>9.2}",
            measured.scenario.label(),
            cpu.cores(cpu.client),
            if server_pid.is_some() {
                format!("{:.2}", cpu.cores(cpu.server))
            } else {
                "?".to_owned()
            },
            cpu.cores(cpu.postgres),
            cpu.cores(cpu.total.saturating_sub(accounted)),
            cpu.cores(cpu.idle),
        );
    }
    if server_pid.is_some() {
        println!();
        println!("server memory after each scenario:");
        for (measured, _, memory) in results {
            if let Some(memory) = memory {
                println!(
                    "{:<30} VmRSS {:>6.1} MiB   VmHWM (peak) {:>6.1} MiB",
                    measured.scenario.label(),
                    memory.resident_kib as f64 / 1024.0,
                    memory.peak_kib as f64 / 1024.0,
                );
            }
        }
    }
    for (measured, _, _) in results {
        if let Some(error) = &measured.first_error {
            let shown: String = error.chars().take(500).collect();
            println!("first error of {}: {shown}", measured.scenario.label());
        }
    }
}

/// The CPUs this machine has.
fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
