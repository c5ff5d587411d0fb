//! `taskrunner mcp`: the real binary over its stdin and stdout, as a desktop
//! assistant starts it.

use std::collections::HashMap;
use std::process::Stdio;

use serde_json::{Value, json};
use taskrunner::queue::Worker;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Client, WITHIN};
use crate::fake_provider::FakeProvider;
use crate::harness::TestDb;
use crate::process::{Launch, ProviderConfig};
use crate::queue::test_config;

#[tokio::test]
async fn it_serves_the_tools_and_follows_a_task_that_a_worker_runs() {
    let fake = FakeProvider::start().await;
    let db = TestDb::migrated().await;
    let config = ProviderConfig::for_fake(&fake);
    let client = Client::stdio(Launch::mcp().database(&db.url).providers(&config)).await;
    let tools = client.service.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.len(), 9);

    let created = client
        .ok(
            "create_task",
            json!({ "prompt": "slow:1000:from stdio", "model": "fake-model" }),
        )
        .await;
    assert_eq!(created["status"], "PENDING");
    let id = created["id"].clone();
    // The process runs no workers: the task waits for one.
    let still = client.ok("get_task", json!({ "id": id })).await;
    assert_eq!(still["status"], "PENDING");

    // A worker elsewhere (here, in the test process) runs it; the wait hears
    // of it through the database's notifications.
    let worker = Worker::start(&db.args(), fake.router(), test_config(2))
        .await
        .expect("worker starts");
    let done = client
        .ok("wait_for_task", json!({ "id": id, "timeout_seconds": 120 }))
        .await;
    assert_eq!(
        done["status"],
        "SUCCEEDED",
        "{done}; log:\n{}",
        client.log()
    );
    assert_eq!(done["result"], "from stdio");
    let progress = client.recorder.progress();
    assert!(!progress.is_empty(), "progress notifications over stdio");

    let missing = client
        .tool_error("get_task", json!({ "id": "999999" }))
        .await;
    assert_eq!(missing["code"], "NOT_FOUND");
    assert!(
        client.log().contains("serving MCP on stdio"),
        "{}",
        client.log()
    );
    worker.shutdown().await;
}

/// Sends one JSON-RPC message as a line.
async fn send(stdin: &mut tokio::process::ChildStdin, message: Value) {
    let line = format!("{message}\n");
    stdin
        .write_all(line.as_bytes())
        .await
        .expect("write to the server's stdin");
}

#[tokio::test]
async fn stdout_carries_only_the_protocol_and_closing_stdin_ends_the_process() {
    let db = TestDb::migrated().await;
    let (mut command, _workdir) = Launch::mcp().database(&db.url).into_command();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start taskrunner mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = child.stderr.take().expect("stderr");

    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "raw", "version": "0" } } }),
    )
    .await;
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    )
    .await;
    // Calls that log on the server: a task created, a tool error.
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": { "name": "create_task", "arguments": { "prompt": "p", "model": "echo" } } }),
    )
    .await;
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": { "name": "get_task", "arguments": { "id": "999999" } } }),
    )
    .await;

    let mut answers = HashMap::new();
    let read = async {
        while answers.len() < 3 {
            let line = stdout
                .next_line()
                .await
                .expect("read stdout")
                .expect("stdout stays open while stdin is");
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("stdout carries JSON-RPC only, not {line:?}"));
            assert_eq!(message["jsonrpc"], "2.0", "{line}");
            if let Some(id) = message["id"].as_i64() {
                answers.insert(id, message);
            }
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("three answers in time");
    assert_eq!(answers[&1]["result"]["serverInfo"]["name"], "taskrunner");
    assert_eq!(
        answers[&2]["result"]["structuredContent"]["status"],
        "PENDING"
    );
    assert_eq!(answers[&3]["result"]["isError"], true);

    // The client closes stdin: the server ends, cleanly, and says nothing more.
    drop(stdin);
    let exited = tokio::time::timeout(WITHIN, child.wait())
        .await
        .expect("the process ends once stdin closes")
        .expect("wait for it");
    assert!(exited.success(), "{exited:?}");
    while let Ok(Some(line)) = stdout.next_line().await {
        let message: Result<Value, _> = serde_json::from_str(&line);
        assert!(
            message.is_ok(),
            "stdout carries JSON-RPC only, not {line:?}"
        );
    }
    let mut log = String::new();
    stderr.read_to_string(&mut log).await.expect("read stderr");
    assert!(
        log.contains("task created"),
        "the logs are on stderr: {log}"
    );
}

#[tokio::test]
async fn sigterm_ends_the_process_while_the_client_keeps_stdin_open() {
    let db = TestDb::migrated().await;
    let (mut command, _workdir) = Launch::mcp().database(&db.url).into_command();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start taskrunner mcp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = child.stderr.take().expect("stderr");
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "raw", "version": "0" } } }),
    )
    .await;
    let answered = tokio::time::timeout(WITHIN, stdout.next_line())
        .await
        .expect("an answer in time")
        .expect("read stdout");
    assert!(answered.is_some_and(|line| line.contains("serverInfo")));
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }),
    )
    .await;
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }),
    )
    .await;
    let listed = tokio::time::timeout(WITHIN, stdout.next_line())
        .await
        .expect("an answer in time")
        .expect("read stdout");
    assert!(listed.is_some_and(|line| line.contains("wait_for_task")));

    let pid = child.id().expect("a pid").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(signalled.success());
    let started = std::time::Instant::now();
    let exited = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
        .await
        .expect("the process ends on SIGTERM though stdin is still open")
        .expect("wait for it");
    let mut log = String::new();
    stderr.read_to_string(&mut log).await.expect("read stderr");
    assert!(exited.success(), "{exited:?}; its log:\n{log}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(stdin);
}
