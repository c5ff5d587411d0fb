//! Benchmark of the queue: one real `taskrunner worker` process against
//! PostgreSQL, with providers faked by an HTTP server inside this program.
//!
//! Scenarios (each prints its figures):
//! - `drain`: 10,000 `echo` tasks created in one statement while the worker
//!   idles, drained at in-flight concurrency 8, 64 and 512: tasks/s from the
//!   insert's commit to the last outcome;
//! - `latency`: one task at a time into an idle worker, 200 samples: time
//!   from the create's commit to the provider receiving the call (p50, p99);
//! - `delayed`: the pickup latency, and a drain at concurrency 64, with
//!   100,000 tasks delayed into the future at the highest priority (and so
//!   first in the claim's order, were they due): what waiting tasks cost the
//!   claim of due ones;
//! - `ai`: a provider that answers after 200 ms, 10,000 tasks at concurrency
//!   500: tasks/s against Little's law (500 / 0.2 s = 2,500/s), the most
//!   database connections the worker held, and its peak RSS;
//! - `tenants`: the drain at concurrency 64 and 512 with the tasks spread over
//!   1 tenant, then over 100 (the claim takes tenants in turn, so every claim
//!   visits each tenant with work), alternating for `--rounds` rounds.
//!
//! ```text
//! cargo build --release --bin taskrunner --example bench_queue
//! target/release/examples/bench_queue [--database-url URL] [--tasks N] [--rounds N] [drain|latency|delayed|ai|tenants]...
//! ```
//!
//! `--tasks` below 200 also shortens the latency run; `BENCH_WORKER_LOG` sets the
//! worker's RUST_LOG (default `warn`).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/taskrunner_bench_queue";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut database_url = DEFAULT_DATABASE_URL.to_owned();
    let mut tasks = 10_000i64;
    let mut rounds = 3usize;
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database-url" => {
                database_url = args.next().context("--database-url needs a value")?
            }
            "--tasks" => tasks = args.next().context("--tasks needs a value")?.parse()?,
            "--rounds" => rounds = args.next().context("--rounds needs a value")?.parse()?,
            "drain" | "latency" | "delayed" | "ai" | "tenants" => scenarios.push(arg),
            other => bail!("unknown argument {other:?}; see the module docs"),
        }
    }
    if scenarios.is_empty() {
        scenarios = vec![
            "drain".into(),
            "latency".into(),
            "delayed".into(),
            "ai".into(),
        ];
    }
    let bench = Bench::new(database_url).await?;
    println!(
        "machine: {} cores; worker binary {}",
        cores(),
        bench.binary.display()
    );
    for scenario in scenarios {
        match scenario.as_str() {
            "drain" => {
                for concurrency in [8, 64, 512] {
                    bench.drain(tasks, concurrency).await?;
                }
            }
            "latency" => {
                bench
                    .latency(if tasks < 200 { tasks as usize } else { 200 }, 0)
                    .await?
            }
            "delayed" => {
                bench
                    .latency(if tasks < 200 { tasks as usize } else { 200 }, 100_000)
                    .await?;
                bench.drain_beside(tasks, 64, 100_000).await?
            }
            "tenants" => {
                for round in 1..=rounds {
                    for concurrency in [64, 512] {
                        for tenants in [1, 100] {
                            bench
                                .drain_tenants(tasks, concurrency, tenants, round)
                                .await?;
                        }
                    }
                }
            }
            _ => bench.ai(tasks, 500, Duration::from_millis(200)).await?,
        }
    }
    Ok(())
}

struct Bench {
    database_url: String,
    binary: std::path::PathBuf,
    db: tokio_postgres::Client,
}

impl Bench {
    async fn new(database_url: String) -> anyhow::Result<Self> {
        let binary = std::env::current_exe()?
            .parent()
            .and_then(|examples| examples.parent())
            .map(|dir| dir.join("taskrunner"))
            .context("cannot locate the taskrunner binary")?;
        if !binary.exists() {
            bail!(
                "{} is missing: cargo build --release --bin taskrunner",
                binary.display()
            );
        }
        // Create and migrate the database through the binary itself.
        let status = Command::new(&binary)
            .args(["migrate", "--database-url", &database_url])
            .stderr(Stdio::null())
            .status()
            .await?;
        if !status.success() {
            bail!("taskrunner migrate failed against {database_url}");
        }
        let (db, connection) = tokio_postgres::connect(&database_url, NoTls).await?;
        tokio::spawn(connection);
        Ok(Bench {
            database_url,
            binary,
            db,
        })
    }

    /// Starts a worker process with `slots` in flight, its providers pointed at `fake`.
    async fn worker(&self, slots: usize, fake: Option<&Fake>) -> anyhow::Result<Child> {
        let mut command = Command::new(&self.binary);
        command
            .args(["worker", "--workers", &slots.to_string()])
            .env("DATABASE_URL", &self.database_url)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("TASKRUNNER_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        match fake {
            Some(fake) => command
                .env("OPENAI_BASE_URL", &fake.base_url)
                .env("OPENAI_API_KEY", ""),
            None => command
                .env_remove("OPENAI_BASE_URL")
                .env_remove("OPENAI_API_KEY"),
        };
        let child = command.spawn()?;
        // Ready once its LISTEN is in place.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listening: i64 = self
                .db
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'", &[])
                .await?
                .get(0);
            if listening > 0 {
                return Ok(child);
            }
            if Instant::now() > deadline {
                bail!("the worker did not start listening");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn reset(&self) -> anyhow::Result<()> {
        self.db
            .batch_execute("TRUNCATE tasks, task_partial_results, task_status_counts, task_status_deltas, workers")
            .await?;
        self.db.batch_execute("VACUUM ANALYZE tasks").await?;
        Ok(())
    }

    /// Tasks due in a day, at the highest priority: first in the claim's
    /// order, were they due.
    async fn insert_delayed(&self, delayed: i64) -> anyhow::Result<()> {
        if delayed > 0 {
            self.db
                .execute(
                    "INSERT INTO tasks (prompt, model, priority, run_at)
                     SELECT 'later ' || g, 'fake-model', 10, now() + interval '1 day'
                     FROM generate_series(1, $1::bigint) g",
                    &[&delayed],
                )
                .await?;
            self.db.batch_execute("VACUUM ANALYZE tasks").await?;
        }
        Ok(())
    }

    async fn insert(&self, tasks: i64, model: &str, prompt: &str) -> anyhow::Result<Instant> {
        self.db
            .execute(
                "INSERT INTO tasks (prompt, model) SELECT $1 || g, $2 FROM generate_series(1, $3::bigint) g",
                &[&prompt, &model, &tasks],
            )
            .await?;
        let committed = Instant::now();
        // As the API does after a create: wake idle workers.
        self.db.batch_execute("NOTIFY taskrunner_task_due").await?;
        Ok(committed)
    }

    /// Waits until no task is due or running (two probes of partial indexes,
    /// cheap however many tasks finished); samples the worker's connections.
    async fn wait_done(&self, _tasks: i64) -> anyhow::Result<(Instant, i64)> {
        let mut most_connections = 0;
        loop {
            let row = self
                .db
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'pending' AND run_at <= now())
                            OR EXISTS (SELECT 1 FROM tasks WHERE status = 'running'),
                            (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid())",
                    &[],
                )
                .await?;
            most_connections = most_connections.max(row.get::<_, i64>(1));
            if !row.get::<_, bool>(0) {
                return Ok((Instant::now(), most_connections));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn drain(&self, tasks: i64, concurrency: usize) -> anyhow::Result<()> {
        self.drain_beside(tasks, concurrency, 0).await
    }

    /// Drains `tasks` due tasks while `delayed` tasks wait in the future at
    /// the highest priority.
    async fn drain_beside(
        &self,
        tasks: i64,
        concurrency: usize,
        delayed: i64,
    ) -> anyhow::Result<()> {
        self.reset().await?;
        self.insert_delayed(delayed).await?;
        let mut worker = self.worker(concurrency, None).await?;
        let committed = self.insert(tasks, "echo", "task ").await?;
        let (done, connections) = self.wait_done(tasks).await?;
        let elapsed = done - committed;
        let rss = peak_rss(&worker);
        stop(&mut worker).await;
        println!(
            "drain     concurrency {concurrency:>3}, {delayed} delayed tasks waiting: {tasks} echo tasks in {:.2} s = {:>6.0} tasks/s; worker connections ≤ {connections}, peak RSS {rss}",
            elapsed.as_secs_f64(),
            tasks as f64 / elapsed.as_secs_f64(),
        );
        Ok(())
    }

    /// Drains `tasks` due echo tasks spread evenly over `tenants` tenants.
    async fn drain_tenants(
        &self,
        tasks: i64,
        concurrency: usize,
        tenants: i64,
        round: usize,
    ) -> anyhow::Result<()> {
        self.reset().await?;
        let mut worker = self.worker(concurrency, None).await?;
        self.db
            .execute(
                "INSERT INTO tasks (prompt, model, tenant)
                 SELECT 'task ' || g, 'echo', 't' || (g % $2::bigint) FROM generate_series(1, $1::bigint) g",
                &[&tasks, &tenants],
            )
            .await?;
        let committed = Instant::now();
        self.db.batch_execute("NOTIFY taskrunner_task_due").await?;
        let (done, _) = self.wait_done(tasks).await?;
        let elapsed = done - committed;
        stop(&mut worker).await;
        println!(
            "tenants   round {round}, concurrency {concurrency:>3}, {tenants:>3} tenant(s): {tasks} echo tasks in {:.2} s = {:>6.0} tasks/s",
            elapsed.as_secs_f64(),
            tasks as f64 / elapsed.as_secs_f64(),
        );
        Ok(())
    }

    /// Pickup latency, with `delayed` tasks waiting in the future at the
    /// highest priority.
    async fn latency(&self, samples: usize, delayed: i64) -> anyhow::Result<()> {
        self.reset().await?;
        self.insert_delayed(delayed).await?;
        let fake = Fake::start(Duration::ZERO).await?;
        let mut worker = self.worker(8, Some(&fake)).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut latencies = Vec::with_capacity(samples);
        for sample in 0..samples {
            let prompt = format!("latency {sample}");
            self.db
                .execute(
                    "INSERT INTO tasks (prompt, model) VALUES ($1, 'fake-model')",
                    &[&prompt],
                )
                .await?;
            let committed = Instant::now();
            // As the API's notifier does once a create has committed.
            self.db.batch_execute("NOTIFY taskrunner_task_due").await?;
            let arrived = fake.wait_for(&prompt, Duration::from_secs(10)).await?;
            latencies.push(arrived.saturating_duration_since(committed));
            // Let the worker go idle again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop(&mut worker).await;
        latencies.sort();
        let at =
            |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "latency   {samples} samples, {delayed} delayed tasks waiting, commit → provider call: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(at(0.50)),
            ms(at(0.99)),
            ms(latencies[latencies.len() - 1])
        );
        Ok(())
    }

    async fn ai(&self, tasks: i64, concurrency: usize, think: Duration) -> anyhow::Result<()> {
        self.reset().await?;
        let fake = Fake::start(think).await?;
        let mut worker = self.worker(concurrency, Some(&fake)).await?;
        let committed = self.insert(tasks, "fake-model", "ai ").await?;
        let (done, connections) = self.wait_done(tasks).await?;
        let elapsed = (done - committed).as_secs_f64();
        let rss = peak_rss(&worker);
        stop(&mut worker).await;
        let ideal = concurrency as f64 / think.as_secs_f64();
        let rate = tasks as f64 / elapsed;
        println!(
            "ai        {tasks} tasks, provider {} ms, concurrency {concurrency}: {rate:.0} tasks/s = {:.0}% of the ideal {ideal:.0}/s; calls {}; worker connections ≤ {connections}, peak RSS {rss}",
            think.as_millis(),
            rate / ideal * 100.0,
            fake.calls(),
        );
        Ok(())
    }
}

async fn stop(worker: &mut Child) {
    if let Some(pid) = worker.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
}

fn peak_rss(worker: &Child) -> String {
    let status = worker
        .id()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .map(|line| line.trim_start_matches("VmHWM:").trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// An OpenAI-compatible provider that answers after `think`, recording when
/// each prompt arrived.
struct Fake {
    base_url: String,
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Fake {
    async fn start(think: Duration) -> anyhow::Result<Fake> {
        let arrivals = Arc::new(Mutex::new(HashMap::new()));
        let app = axum::Router::new()
            .route("/v1/chat/completions", axum::routing::post(complete))
            .route(
                "/v1/models",
                axum::routing::get(|| async { Json(json!({ "data": [{ "id": "fake-model" }] })) }),
            )
            .with_state((Arc::clone(&arrivals), think));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Fake { base_url, arrivals })
    }

    fn calls(&self) -> usize {
        self.arrivals.lock().map(|a| a.len()).unwrap_or(0)
    }

    async fn wait_for(&self, prompt: &str, within: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(at) = self
                .arrivals
                .lock()
                .ok()
                .and_then(|a| a.get(prompt).copied())
            {
                return Ok(at);
            }
            if Instant::now() > deadline {
                bail!("{prompt:?} never reached the provider");
            }
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
    }
}

type FakeState = (Arc<Mutex<HashMap<String, Instant>>>, Duration);

async fn complete(
    State((arrivals, think)): State<FakeState>,
    Json(body): Json<Value>,
) -> Json<Value> {
    let arrived = Instant::now();
    let prompt = body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut arrivals) = arrivals.lock() {
        arrivals.insert(prompt.clone(), arrived);
    }
    tokio::time::sleep(think).await;
    Json(json!({
        "choices": [{ "message": { "role": "assistant", "content": prompt } }],
        "usage": { "prompt_tokens": 1, "completion_tokens": 1 }
    }))
}
