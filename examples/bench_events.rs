//! The event backbone under load: subscribers over real WebSockets on one or
//! more running `taskrunner serve` processes sharing one database.
//!
//! Modes:
//!
//! - `delivery`: opens `--subscribers` connections spread over the `--url`s,
//!   each following its own task with `taskUpdated`, then changes random
//!   tasks (`updateTask`, over HTTP, to the processes in turn) at `--rate`
//!   per second for `--seconds`, and reports how long each change took to
//!   reach its subscriber: from sending the mutation (its commit is inside
//!   that span, so this is an upper bound of commit → subscriber) to the
//!   subscriber's message. Then the same with `taskEvents`: `--subscribers`
//!   connections each receiving every change, `--firehose-rate` creates per
//!   second, every delivery timed.
//! - `memory`: the first `--url`'s resident memory (`--server-pid`) before and
//!   after `--subscribers` idle `taskUpdated` subscriptions, one connection
//!   each, and the difference per subscription.
//! - `hold`: opens `--subscribers` idle `taskUpdated` subscriptions and keeps
//!   them until killed, for measuring other benchmarks beside them.
//!
//! ```text
//! cargo run --release --example bench_events -- delivery \
//!     --url 127.0.0.1:8089 --url 127.0.0.1:8090 \
//!     --database-url postgres://postgres@127.0.0.1:5432/taskrunner_bench_events
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

const USAGE: &str = "usage: bench_events delivery|memory|hold --url HOST:PORT [--url …] \
--database-url URL [--subscribers N (1000)] [--rate N (200)] [--firehose-rate N (10)] \
[--seconds N (10)] [--server-pid PID]";

struct Options {
    mode: String,
    urls: Vec<String>,
    database_url: String,
    subscribers: usize,
    rate: u64,
    firehose_rate: u64,
    seconds: u64,
    server_pid: Option<u32>,
}

fn options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().context(USAGE)?;
    let mut options = Options {
        mode,
        urls: Vec::new(),
        database_url: String::new(),
        subscribers: 1000,
        rate: 200,
        firehose_rate: 10,
        seconds: 10,
        server_pid: None,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => options.urls.push(value),
            "--database-url" => options.database_url = value,
            "--subscribers" => options.subscribers = value.parse()?,
            "--rate" => options.rate = value.parse()?,
            "--firehose-rate" => options.firehose_rate = value.parse()?,
            "--seconds" => options.seconds = value.parse()?,
            "--server-pid" => options.server_pid = Some(value.parse()?),
            _ => bail!("unknown flag {flag}\n{USAGE}"),
        }
    }
    if options.urls.is_empty() || options.database_url.is_empty() {
        bail!(USAGE);
    }
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    match options.mode.as_str() {
        "delivery" => {
            watch_delivery(&options).await?;
            firehose_delivery(&options).await
        }
        "memory" => memory(&options).await,
        "hold" => {
            let ids = seed(&options.database_url, options.subscribers).await?;
            let _held = subscribe_all(&options.urls, &ids).await?;
            println!("holding {} idle subscriptions", ids.len());
            std::future::pending::<()>().await;
            Ok(())
        }
        other => bail!("unknown mode {other}\n{USAGE}"),
    }
}

/// Inserts `n` PENDING tasks on a model no worker serves; returns their ids.
async fn seed(database_url: &str, n: usize) -> anyhow::Result<Vec<i64>> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "INSERT INTO tasks (prompt, model) SELECT 'watched ' || n, 'bench-idle'
             FROM generate_series(1, $1::int) AS n RETURNING id",
            &[&i32::try_from(n)?],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

async fn connect(address: &str) -> anyhow::Result<Socket> {
    let mut request = format!("ws://{address}/graphql").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    socket
        .send(Message::text(
            json!({ "type": "connection_init" }).to_string(),
        ))
        .await?;
    let ack = next_json(&mut socket).await?;
    if ack["type"] != "connection_ack" {
        bail!("no connection_ack: {ack}");
    }
    Ok(socket)
}

async fn next_json(socket: &mut Socket) -> anyhow::Result<Value> {
    loop {
        match socket.next().await.context("the socket closed")?? {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text)?;
                if value["type"] != "ping" && value["type"] != "pong" {
                    return Ok(value);
                }
            }
            Message::Close(frame) => bail!("closed: {frame:?}"),
            _ => {}
        }
    }
}

async fn subscribe(socket: &mut Socket, query: &str, variables: Value) -> anyhow::Result<()> {
    socket
        .send(Message::text(
            json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } })
                .to_string(),
        ))
        .await?;
    Ok(())
}

const FOLLOW: &str = "subscription($id: ID!) { taskUpdated(id: $id) { id priority status } }";

/// One connection per task, round-robin over the processes, each following
/// its task; returns once every subscription has sent the task as it is.
async fn subscribe_all(urls: &[String], ids: &[i64]) -> anyhow::Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(100) {
        let opened = futures_util::future::try_join_all(chunk.iter().enumerate().map(
            |(i, id)| async move {
                let mut socket = connect(&urls[i % urls.len()]).await?;
                subscribe(&mut socket, FOLLOW, json!({ "id": id.to_string() })).await?;
                let first = next_json(&mut socket).await?;
                if first["type"] != "next" {
                    bail!("subscription refused: {first}");
                }
                Ok::<_, anyhow::Error>(socket)
            },
        ))
        .await?;
        sockets.extend(opened);
    }
    Ok(sockets)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let last = sorted.len() - 1;
    sorted[((last as f64 * fraction).round() as usize).min(last)]
}

fn report(name: &str, mut latencies: Vec<Duration>, expected: usize) {
    latencies.sort();
    println!(
        "{name}: {} of {expected} delivered; p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.90).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

/// When each change was sent, by the key its subscribers will see.
type Sent = Arc<Mutex<HashMap<String, Instant>>>;

/// Reads a socket until told to stop, timing each message against `sent`.
fn time_deliveries(
    mut socket: Socket,
    sent: Sent,
    key: fn(&Value) -> Option<String>,
    latencies: Arc<Mutex<Vec<Duration>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(message) = next_json(&mut socket).await {
            let arrived = Instant::now();
            let Some(key) = key(&message) else { continue };
            let started = sent.lock().map(|sent| sent.get(&key).copied());
            if let Ok(Some(started)) = started
                && let Ok(mut latencies) = latencies.lock()
            {
                latencies.push(arrived - started);
            }
        }
    })
}

/// Notes when the change its subscribers will know by `key` was sent, then
/// sends the mutation `body` to `address` without waiting for the answer
/// (open loop: a slow answer does not delay the next change).
fn send_timed(
    http: &reqwest::Client,
    address: &str,
    body: Value,
    key: String,
    sent: &Sent,
) -> anyhow::Result<()> {
    sent.lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .insert(key, Instant::now());
    let request = http.post(format!("http://{address}/graphql")).json(&body);
    tokio::spawn(async move {
        let _ = request.send().await;
    });
    Ok(())
}

/// Gives the last deliveries two seconds, stops the readers, and returns what
/// they timed.
async fn stop_reading(
    readers: Vec<tokio::task::JoinHandle<()>>,
    latencies: &Mutex<Vec<Duration>>,
) -> anyhow::Result<Vec<Duration>> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    for reader in readers {
        reader.abort();
    }
    Ok(std::mem::take(
        &mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
    ))
}

async fn watch_delivery(options: &Options) -> anyhow::Result<()> {
    let ids = seed(&options.database_url, options.subscribers).await?;
    let opened = Instant::now();
    let sockets = subscribe_all(&options.urls, &ids).await?;
    println!(
        "taskUpdated: {} subscriptions over {} processes opened in {:.1} s",
        sockets.len(),
        options.urls.len(),
        opened.elapsed().as_secs_f64()
    );
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let key = |message: &Value| {
        let task = &message["payload"]["data"]["taskUpdated"];
        Some(format!("{}/{}", task["id"].as_str()?, task["priority"]))
    };
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| time_deliveries(socket, Arc::clone(&sent), key, Arc::clone(&latencies)))
        .collect();

    let http = reqwest::Client::new();
    let total = options.rate * options.seconds;
    let period = Duration::from_secs_f64(1.0 / options.rate as f64);
    let mut ticks = tokio::time::interval(period);
    let mut priorities: HashMap<i64, i32> = HashMap::new();
    for n in 0..total {
        ticks.tick().await;
        let id = ids[rand::random_range(0..ids.len())];
        // Each change sets a priority the task did not have, so each is seen.
        let priority = priorities
            .get(&id)
            .map_or(2, |p| if *p == 9 { 2 } else { p + 1 });
        priorities.insert(id, priority);
        send_timed(
            &http,
            &options.urls[n as usize % options.urls.len()],
            json!({
                "query": "mutation($id: ID!, $p: Int!) { updateTask(id: $id, input: { priority: $p }) { id } }",
                "variables": { "id": id.to_string(), "p": priority }
            }),
            format!("{id}/{priority}"),
            &sent,
        )?;
    }
    let latencies = stop_reading(readers, &latencies).await?;
    report(
        &format!(
            "taskUpdated, {} changes at {}/s to {} subscribers",
            total,
            options.rate,
            ids.len()
        ),
        latencies,
        total as usize,
    );
    Ok(())
}

async fn firehose_delivery(options: &Options) -> anyhow::Result<()> {
    let mut sockets = Vec::with_capacity(options.subscribers);
    for i in 0..options.subscribers {
        let mut socket = connect(&options.urls[i % options.urls.len()]).await?;
        subscribe(
            &mut socket,
            "subscription { taskEvents(filter: { model: \"echo\" }) { type task { prompt } } }",
            json!({}),
        )
        .await?;
        sockets.push(socket);
    }
    // The subscriptions are in place once the server has read them; give the
    // servers a moment, then measure only what is sent after.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent: Sent = Arc::default();
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let key = |message: &Value| {
        message["payload"]["data"]["taskEvents"]["task"]["prompt"]
            .as_str()
            .map(str::to_owned)
    };
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| time_deliveries(socket, Arc::clone(&sent), key, Arc::clone(&latencies)))
        .collect();
    let http = reqwest::Client::new();
    let total = options.firehose_rate * options.seconds;
    let mut ticks =
        tokio::time::interval(Duration::from_secs_f64(1.0 / options.firehose_rate as f64));
    for n in 0..total {
        ticks.tick().await;
        let prompt = format!("firehose {n}");
        send_timed(
            &http,
            &options.urls[n as usize % options.urls.len()],
            json!({
                "query": "mutation($p: String!) { createTask(input: { prompt: $p, model: \"echo\" }) { id } }",
                "variables": { "p": prompt }
            }),
            prompt,
            &sent,
        )?;
    }
    let latencies = stop_reading(readers, &latencies).await?;
    report(
        &format!(
            "taskEvents, {} creates at {}/s, each to {} subscribers",
            total, options.firehose_rate, options.subscribers
        ),
        latencies,
        (total as usize) * options.subscribers,
    );
    Ok(())
}

fn resident_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn memory(options: &Options) -> anyhow::Result<()> {
    let pid = options.server_pid.context("memory needs --server-pid")?;
    let urls = &options.urls[..1];
    let ids = seed(&options.database_url, options.subscribers).await?;
    // Warm the server's allocator and pools with a few subscriptions first.
    let warm = subscribe_all(urls, &ids[..ids.len().min(50)]).await?;
    drop(warm);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = resident_kib(pid)?;
    let held = subscribe_all(urls, &ids).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = resident_kib(pid)?;
    let per = (after.saturating_sub(before) as f64) * 1024.0 / held.len() as f64;
    println!(
        "memory: resident {before} KiB before, {after} KiB with {} idle subscriptions \
         (one connection each): {:.1} KiB per subscription",
        held.len(),
        per / 1024.0
    );
    Ok(())
}
