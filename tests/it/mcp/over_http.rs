//! The streamable HTTP transport at `/mcp`: which Host headers it answers
//! (DNS-rebinding protection), in-process and through `serve`'s settings.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::{Client, WITHIN, mcp_url};
use crate::harness::{TestApp, TestDb};
use crate::process::Launch;

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;

/// The HTTP status of an `initialize` POSTed to `address` with `Host: host`
/// (a raw request: clients set the Host header from the URL).
async fn status_for_host(address: &str, host: &str) -> u16 {
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{INITIALIZE}",
        INITIALIZE.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read the response");
        response
    };
    let response = tokio::time::timeout(WITHIN, exchange)
        .await
        .expect("an answer in time");
    let head = String::from_utf8_lossy(&response);
    head.split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP status line in {head:?}"))
}

fn port_of(address: &str) -> &str {
    address.rsplit(':').next().expect("a port")
}

#[tokio::test]
async fn only_the_loopback_host_names_are_answered_by_default() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let port = port_of(&served.address);
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "LOCALHOST".to_owned(),
    ] {
        assert_eq!(status_for_host(&served.address, &host).await, 200, "{host}");
    }
    for host in [
        format!("evil.example:{port}"),
        "localhost.evil.example".to_owned(),
        "10.0.0.1".to_owned(),
    ] {
        assert_eq!(status_for_host(&served.address, &host).await, 403, "{host}");
    }
    // rmcp's client, whose Host header is the URL's, is answered.
    let client = Client::http(&mcp_url(&served.address)).await;
    assert!(client.service.peer_info().is_some());
}

#[tokio::test]
async fn the_allowed_hosts_are_a_setting() {
    let app = TestApp::new().await;
    let settings = taskrunner::mcp::HttpSettings {
        allowed_hosts: vec!["tasks.example.com".into(), "10.0.0.5:8443".into()],
        shutdown: CancellationToken::new(),
        ..Default::default()
    };
    let options = taskrunner::http::HttpOptions {
        mcp: settings,
        ..Default::default()
    };
    let router = taskrunner::http::router_with(app.state.clone(), options);
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let address = socket.local_addr().expect("bound").to_string();
    let server = tokio::spawn(async move { axum::serve(socket, router).await });

    for (host, status) in [
        ("tasks.example.com", 200),
        ("tasks.example.com:1234", 200),
        ("10.0.0.5:8443", 200),
        ("10.0.0.5:8000", 403),
        ("localhost", 403),
        ("127.0.0.1", 403),
    ] {
        assert_eq!(status_for_host(&address, host).await, status, "{host}");
    }
    server.abort();
}

#[tokio::test]
async fn serve_reads_the_allowed_hosts_from_its_option_and_environment() {
    let db = TestDb::migrated().await;
    let from_env = Launch::serve()
        .database(&db.url)
        .args(["--workers", "0"])
        .env(
            "TASKRUNNER_MCP_ALLOWED_HOSTS",
            "tasks.example.com,localhost:1",
        )
        .spawn();
    let address = from_env.address().await;
    let port = port_of(&address);
    for (host, status) in [
        ("tasks.example.com".to_owned(), 200),
        ("localhost:1".to_owned(), 200),
        (format!("localhost:{port}"), 403),
        (format!("127.0.0.1:{port}"), 403),
    ] {
        assert_eq!(status_for_host(&address, &host).await, status, "{host}");
    }

    let any_host = Launch::serve()
        .database(&db.url)
        .args(["--workers", "0", "--mcp-allowed-hosts", "*"])
        .spawn();
    let address = any_host.address().await;
    assert_eq!(status_for_host(&address, "anything.example").await, 200);

    let mut refused = Launch::serve()
        .database(&db.url)
        .args(["--workers", "0", "--mcp-allowed-hosts", "http://x"])
        .spawn();
    let exited = refused
        .wait_for_exit(WITHIN)
        .await
        .expect("a bad host name stops serve at once");
    assert!(!exited.status.success());
}

#[tokio::test]
async fn serve_stops_promptly_with_a_wait_for_task_in_flight() {
    let db = TestDb::migrated().await;
    let mut serve = Launch::serve()
        .database(&db.url)
        .args(["--workers", "0", "--shutdown-grace-seconds", "30"])
        .spawn();
    let address = serve.address().await;
    let client = Client::http(&mcp_url(&address)).await;
    let created = client
        .ok(
            "create_task",
            serde_json::json!({ "prompt": "p", "model": "echo" }),
        )
        .await;
    // Nobody runs the task: this call would wait ten minutes.
    let waiting = client.try_call(
        "wait_for_task",
        serde_json::json!({ "id": created["id"], "timeout_seconds": 600 }),
    );
    let stop = async {
        // The call is in flight once its first progress notification came.
        let deadline = std::time::Instant::now() + WITHIN;
        while client.recorder.progress().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the wait began");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        serve.terminate();
        serve.wait_for_exit(WITHIN).await
    };
    let (_answer, exited) = tokio::join!(waiting, stop);
    let exited = exited.expect("serve exits");
    assert!(exited.status.success(), "{exited:?}");
    // Well within the 30 s grace period: the call was ended, not waited for.
    assert!(
        exited.took < std::time::Duration::from_secs(10),
        "{exited:?}"
    );
}
