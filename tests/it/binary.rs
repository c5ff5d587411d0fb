//! End to end through the real `taskrunner` binary: start-up on a free port,
//! GraphiQL, health, readiness, a GraphQL round trip, graceful shutdown.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::harness::TestDb;
use crate::process::{Launch, Process};

/// A running `taskrunner serve` and the address it listens on.
struct Server {
    process: Process,
    address: String,
}

impl Server {
    async fn start(db: &TestDb) -> Server {
        let process = Launch::serve().database(&db.url).spawn();
        let address = process.address().await;
        Server { process, address }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }
}

async fn graphql(
    client: &reqwest::Client,
    server: &Server,
    query: &str,
    variables: Value,
) -> Value {
    crate::process::graphql(client, &server.address, query, variables).await
}

#[tokio::test]
async fn the_binary_serves_and_shuts_down_gracefully() {
    let db = TestDb::named_fresh(); // the server creates it
    let mut server = Server::start(&db).await;
    let client = reqwest::Client::new();

    let page = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("graphiql"));
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let created = graphql(
        &client,
        &server,
        "mutation($input: CreateTaskInput!) { createTask(input: $input) { id status } }",
        json!({ "input": { "prompt": "end to end", "model": "echo", "priority": 7 } }),
    )
    .await;
    let id = created["data"]["createTask"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // `serve` runs workers too: the echo task is run and answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = graphql(
            &client,
            &server,
            "query($id: ID!) { task(id: $id) { prompt priority status result attempts } }",
            json!({ "id": id }),
        )
        .await;
        if read["data"]["task"]["status"] == "SUCCEEDED" {
            assert_eq!(
                read["data"]["task"],
                json!({ "prompt": "end to end", "priority": 7, "status": "SUCCEEDED", "result": "end to end", "attempts": 1 })
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the task ran: {read}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A request in flight when SIGTERM arrives is still answered: send the
    // headers and half the body, signal, then send the rest.
    let body = json!({ "query": "{ tasks { totalCount } }" }).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(&server.address).await.unwrap();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        server.address,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.process.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(r#"{"data":{"tasks":{"totalCount":1}}}"#),
        "{response}"
    );

    let exited = server
        .process
        .wait_for_exit(Duration::from_secs(15))
        .await
        .expect("exits after SIGTERM");
    assert!(
        exited.status.success(),
        "clean exit: {} ({:?} after SIGTERM)",
        exited.status,
        exited.took
    );
    assert!(
        server
            .process
            .events()
            .iter()
            .any(|event| event["message"] == "stopped"),
        "logs that it stopped"
    );
    assert!(
        TcpStream::connect(&server.address).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_task_loses_nothing() {
    let fake = crate::fake_provider::FakeProvider::start().await;
    let db = TestDb::migrated().await;
    let mut killed = Launch::worker()
        .database(&db.url)
        .env("OPENAI_BASE_URL", &fake.base_url)
        .env("OPENAI_API_KEY", "")
        .args(["--workers", "4", "--lease-seconds", "2"])
        .spawn();

    // The worker child learns its models from the fake's GET /models.
    let state = taskrunner::AppState::new(db.pool(), fake.router());
    let schema = taskrunner::graphql::schema(state.clone());
    let create = async_graphql::Request::new(
        r#"mutation { createTask(input: { prompt: "hang-once:survived", model: "fake-small" }) { id } }"#,
    );
    let create = create.data(taskrunner::auth::Principal::operator());
    let created = serde_json::to_value(schema.execute(create).await).unwrap();
    let id: i64 = created["data"]["createTask"]["id"]
        .as_str()
        .expect("created")
        .parse()
        .unwrap();

    fake.wait_for_calls("hang-once:survived", 1, Duration::from_secs(20))
        .await;
    let client = db.client().await;
    let holder: Option<String> = client
        .query_one("SELECT worker_id FROM tasks WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(holder.is_some(), "the child holds the task");
    killed.kill().await; // SIGKILL: no goodbye

    let survivor =
        taskrunner::queue::Worker::start(&db.args(), fake.router(), crate::queue::test_config(4))
            .await
            .expect("worker starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let row = loop {
        let row = client
            .query_one(
                "SELECT status::text, result, attempts, worker_id FROM tasks WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap();
        if row.get::<_, String>(0) == "succeeded" {
            break row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task was taken over once the lease expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    survivor.shutdown().await;
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("survived"));
    assert_eq!(
        row.get::<_, i32>(2),
        2,
        "the killed attempt counts, the second one finished"
    );
    assert_eq!(
        fake.calls_for("hang-once:survived"),
        2,
        "run again exactly once, nothing duplicated"
    );
}

#[tokio::test]
async fn schema_command_prints_the_sdl() {
    let output = Command::new(env!("CARGO_BIN_EXE_taskrunner"))
        .arg("schema")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        taskrunner::graphql::sdl()
    );
}

#[tokio::test]
async fn serve_binds_its_port_before_its_workers_take_any_task() {
    let db = TestDb::migrated().await;
    // Work is waiting before the process starts.
    db.client()
        .await
        .batch_execute(
            "INSERT INTO tasks (prompt, model) SELECT 'waiting ' || g, 'echo' FROM generate_series(1, 50) g",
        )
        .await
        .unwrap();
    let server = Launch::serve().database(&db.url).spawn();
    let message = |event: &Value| event["message"].as_str().unwrap_or_default().to_owned();
    server
        .wait_for_event(
            "that its worker started",
            |event| message(event) == "worker starting",
            Duration::from_secs(60),
        )
        .await;
    let order: Vec<String> = server
        .events()
        .iter()
        .map(message)
        .filter(|m| m.starts_with("listening") || m == "worker starting")
        .collect();
    assert!(
        order.len() == 2 && order[0].starts_with("listening"),
        "the port is bound first: {order:?}"
    );
    // And the work waiting is done.
    let client = db.client().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done: i64 = client
            .query_one("SELECT count(*) FROM tasks WHERE status = 'succeeded'", &[])
            .await
            .unwrap()
            .get(0);
        if done == 50 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{done} of 50 done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn once_shutdown_begins_no_new_task_is_claimed() {
    let fake = crate::fake_provider::FakeProvider::start().await;
    let providers = crate::process::ProviderConfig::for_fake(&fake);
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute("INSERT INTO tasks (prompt, model) VALUES ('hang', 'fake-model')")
        .await
        .unwrap();
    let mut server = Launch::serve()
        .database(&db.url)
        .providers(&providers)
        .args(["--shutdown-grace-seconds", "3"])
        .spawn();
    server.address().await;
    fake.wait_for_calls("hang", 1, Duration::from_secs(30))
        .await;
    // The running task keeps the process in its grace period; work that
    // arrives meanwhile must be left for another process.
    server.terminate();
    server
        .wait_for_event(
            "that it stopped claiming",
            |event| event["message"] == "worker stopping",
            Duration::from_secs(10),
        )
        .await;
    client
        .batch_execute(
            "INSERT INTO tasks (prompt, model) VALUES ('late', 'fake-model'); NOTIFY taskrunner_task_due",
        )
        .await
        .unwrap();
    let exited = server
        .wait_for_exit(Duration::from_secs(3 + 5))
        .await
        .expect("exits within the grace period and a few seconds");
    assert!(exited.status.success(), "{exited:?}");
    assert_eq!(fake.calls_for("late"), 0, "not claimed while stopping");
    let rows = client
        .query(
            "SELECT prompt, status::text, attempts FROM tasks ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let states: Vec<(String, String, i32)> = rows
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    assert_eq!(
        states,
        [
            ("hang".to_owned(), "pending".to_owned(), 0),
            ("late".to_owned(), "pending".to_owned(), 0)
        ],
        "the running task was handed back uncounted; the late one never taken"
    );
}
