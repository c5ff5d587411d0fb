//! Benchmark of streamed answers: how soon the first piece of an answer
//! reaches an API process, and a subscriber of it.
//!
//! One real `taskrunner worker` process and one `taskrunner serve --workers 0`
//! process run against PostgreSQL; a fake OpenAI-compatible provider inside
//! this program streams every answer (its first piece at once, then more
//! pieces `--gap-ms` apart), recording when each call arrived.
//!
//! Scenarios (each prints its figures):
//! - `first-chunk`: one task at a time into an idle worker, 200 samples.
//!   Each task is subscribed to (`taskOutput`, over a WebSocket to the serve
//!   process) before it falls due; then it is made due (as a create would,
//!   with a NOTIFY). Reported, p50 / p99: due → provider call (pickup);
//!   provider's first piece → first notification heard on the output channel
//!   (by a LISTEN connection of this program, as an API process's listener
//!   hears it); provider's first piece → the subscriber's first chunk;
//!   due → the subscriber's first chunk; and provider's last piece (three
//!   pieces, 20 ms apart, after the first) → the subscriber's last text.
//! - `load`: 1,000 tasks (`--tasks`) at 100 in flight, each answer 20 pieces 50 ms
//!   apart: per task, provider's first piece → first notification heard
//!   (p50, p99), and whether every byte of every answer was heard in order.
//!
//! ```text
//! cargo build --release --bin taskrunner --example bench_streaming
//! target/release/examples/bench_streaming [--database-url URL] [--samples N] [--tasks N] [first-chunk|load]...
//! ```
//!
//! `BENCH_WORKER_LOG` sets the processes' RUST_LOG (default `warn`).

mod fake;
mod subscriber;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use fake::StreamingFake;
use subscriber::Subscriber;

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/taskrunner_bench_streaming";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut database_url = DEFAULT_DATABASE_URL.to_owned();
    let mut samples = 200usize;
    let mut tasks = 1_000i64;
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database-url" => {
                database_url = args.next().context("--database-url needs a value")?
            }
            "--samples" => samples = args.next().context("--samples needs a value")?.parse()?,
            "--tasks" => tasks = args.next().context("--tasks needs a value")?.parse()?,
            "first-chunk" | "load" => scenarios.push(arg),
            other => bail!("unknown argument {other:?}; see the module docs"),
        }
    }
    if scenarios.is_empty() {
        scenarios = vec!["first-chunk".into(), "load".into()];
    }
    let bench = Bench::new(database_url).await?;
    println!(
        "machine: {} cores; binary {}",
        std::thread::available_parallelism().map_or(1, usize::from),
        bench.binary.display()
    );
    for scenario in scenarios {
        match scenario.as_str() {
            "first-chunk" => bench.first_chunk(samples).await?,
            _ => bench.load(tasks, 100).await?,
        }
    }
    Ok(())
}

struct Bench {
    database_url: String,
    binary: std::path::PathBuf,
    db: tokio_postgres::Client,
}

/// The output channel's notifications, as (task, offset, text length, done,
/// when heard), from a LISTEN connection of this program.
type Heard = (i64, u64, usize, bool, Instant);

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

    async fn reset(&self) -> anyhow::Result<()> {
        self.db
            .batch_execute(
                "TRUNCATE tasks, task_partial_results, task_status_counts, task_status_deltas, workers",
            )
            .await?;
        self.db.batch_execute("VACUUM ANALYZE tasks").await?;
        Ok(())
    }

    /// Starts `taskrunner <args>` with its providers pointed at `fake`.
    fn spawn(&self, args: &[&str], fake: &StreamingFake) -> anyhow::Result<Child> {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env("DATABASE_URL", &self.database_url)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("OPENAI_BASE_URL", &fake.base_url)
            .env("OPENAI_API_KEY", "")
            .env_remove("TASKRUNNER_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        Ok(command.spawn()?)
    }

    /// Waits until `n` connections of other processes LISTEN.
    async fn wait_listening(&self, n: i64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listening: i64 = self
                .db
                .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'", &[])
                .await?
                .get(0);
            if listening >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the processes did not start listening");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Hears the output channel on a connection of this program.
    async fn tap(
        &self,
    ) -> anyhow::Result<(tokio_postgres::Client, mpsc::UnboundedReceiver<Heard>)> {
        let (client, mut connection) = tokio_postgres::connect(&self.database_url, NoTls).await?;
        let (heard, received) = mpsc::unbounded_channel();
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notification(n) = message {
                    let at = Instant::now();
                    let Ok(chunk) = serde_json::from_str::<Value>(n.payload()) else {
                        continue;
                    };
                    let _ = heard.send((
                        chunk["task"].as_i64().unwrap_or(0),
                        chunk["offset"].as_u64().unwrap_or(0),
                        chunk["text"].as_str().map_or(0, str::len),
                        chunk["done"].as_bool().unwrap_or(false),
                        at,
                    ));
                }
            }
        });
        client
            .batch_execute("LISTEN taskrunner_task_output")
            .await?;
        Ok((client, received))
    }

    async fn first_chunk(&self, samples: usize) -> anyhow::Result<()> {
        self.reset().await?;
        let (more, gap) = (3, Duration::from_millis(20));
        let fake = StreamingFake::start(more, gap).await?;
        let (_tap_client, mut heard) = self.tap().await?;
        let address = free_address()?;
        let mut worker = self.spawn(&["worker", "--workers", "8"], &fake)?;
        let mut api = self.spawn(&["serve", "--workers", "0", "--bind", &address], &fake)?;
        // The worker's listener, the API's listener and this program's tap.
        self.wait_listening(3).await?;
        let mut subscriber = Subscriber::connect(&address).await?;
        let (mut pickup, mut to_heard, mut to_subscriber, mut due_to_subscriber, mut last) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for sample in 0..samples {
            let prompt = format!("first chunk {sample}");
            let id: i64 = self
                .db
                .query_one(
                    "INSERT INTO tasks (prompt, model, run_at) VALUES ($1, 'fake-model', now() + interval '1 day') RETURNING id",
                    &[&prompt],
                )
                .await?
                .get(0);
            subscriber.subscribe(id).await?;
            // Subscribed while it waits; now it falls due, as a create would.
            self.db
                .execute("UPDATE tasks SET run_at = now() WHERE id = $1", &[&id])
                .await?;
            let due = Instant::now();
            self.db.batch_execute("NOTIFY taskrunner_task_due").await?;
            let first = subscriber.first_chunk(Duration::from_secs(10)).await?;
            let called = fake.wait_for(&prompt, Duration::from_secs(10)).await?;
            let first_heard = loop {
                let (task, _, _, _, at) =
                    tokio::time::timeout(Duration::from_secs(10), heard.recv())
                        .await?
                        .context("the tap stopped")?;
                if task == id {
                    break at;
                }
            };
            let last_text = subscriber.finish(Duration::from_secs(10)).await?;
            pickup.push(called.saturating_duration_since(due));
            to_heard.push(first_heard.saturating_duration_since(called));
            to_subscriber.push(first.saturating_duration_since(called));
            due_to_subscriber.push(first.saturating_duration_since(due));
            // The last piece was written `more` gaps after the first.
            if let Some(at) = last_text {
                let written = called + gap * more as u32;
                last.push(at.saturating_duration_since(written));
            }
            // Drain the rest of its pieces from the tap, and let the worker idle.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while heard.try_recv().is_ok() {}
        }
        stop(&mut worker).await;
        stop(&mut api).await;
        println!("first-chunk {samples} samples, one at a time (p50 / p99 / max, ms):");
        for (what, mut latencies) in [
            ("due → provider call (pickup)", pickup),
            ("provider's first piece → notification heard", to_heard),
            (
                "provider's first piece → subscriber's first chunk",
                to_subscriber,
            ),
            ("due → subscriber's first chunk", due_to_subscriber),
            ("provider's last piece → subscriber's last text", last),
        ] {
            let (p50, p99, max) = percentiles(&mut latencies);
            println!("  {what:<52} {p50:>6.2} / {p99:>6.2} / {max:>6.2}");
        }
        Ok(())
    }

    async fn load(&self, tasks: i64, concurrency: usize) -> anyhow::Result<()> {
        self.reset().await?;
        let fake = StreamingFake::start(
            19,
            Duration::from_millis(
                std::env::var("GAP")
                    .ok()
                    .and_then(|g| g.parse().ok())
                    .unwrap_or(50),
            ),
        )
        .await?;
        let (_tap_client, mut heard) = self.tap().await?;
        let mut worker = self.spawn(&["worker", "--workers", &concurrency.to_string()], &fake)?;
        self.wait_listening(2).await?;
        self.db
            .execute(
                "INSERT INTO tasks (prompt, model) SELECT 'load ' || g, 'fake-model' FROM generate_series(1, $1::bigint) g",
                &[&tasks],
            )
            .await?;
        let started = Instant::now();
        self.db.batch_execute("NOTIFY taskrunner_task_due").await?;
        let ids: Vec<(i64, String)> = self
            .db
            .query("SELECT id, prompt FROM tasks", &[])
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let mut first: HashMap<i64, Instant> = HashMap::new();
        let mut heard_bytes: HashMap<i64, u64> = HashMap::new();
        let mut in_order = true;
        let mut done = 0;
        let mut notifications = 0usize;
        while done < ids.len() {
            let (task, offset, length, end, at) =
                tokio::time::timeout(Duration::from_secs(60), heard.recv())
                    .await?
                    .context("the tap stopped")?;
            notifications += 1;
            first.entry(task).or_insert(at);
            let bytes = heard_bytes.entry(task).or_insert(0);
            in_order &= *bytes == offset;
            *bytes = offset + length as u64;
            if end {
                done += 1;
            }
        }
        let elapsed = started.elapsed();
        stop(&mut worker).await;
        let mut latencies = Vec::new();
        let mut whole = true;
        for (id, prompt) in &ids {
            let called = fake.wait_for(prompt, Duration::from_secs(1)).await?;
            if let Some(at) = first.get(id) {
                latencies.push(at.saturating_duration_since(called));
            }
            whole &= heard_bytes.get(id).copied() == Some(fake.answer_len(prompt) as u64);
        }
        let (p50, p99, max) = percentiles(&mut latencies);
        println!(
            "load      {tasks} tasks, {concurrency} in flight, 20 pieces 50 ms apart: done in {:.2} s; {notifications} notifications ({:.1} per answer); provider's first piece → notification heard p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; every answer heard whole and in order: {}",
            elapsed.as_secs_f64(),
            notifications as f64 / tasks as f64,
            whole && in_order,
        );
        Ok(())
    }
}

/// A free port on 127.0.0.1 for the serve process.
fn free_address() -> anyhow::Result<String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?.to_string())
}

async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
}

/// p50, p99 and max of `latencies`, in milliseconds.
fn percentiles(latencies: &mut [Duration]) -> (f64, f64, f64) {
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (
        ms(at(0.50)),
        ms(at(0.99)),
        ms(latencies[latencies.len() - 1]),
    )
}
