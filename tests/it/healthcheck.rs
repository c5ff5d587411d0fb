//! `taskrunner healthcheck` as a container engine runs it: the real binary
//! against a served application, a closed port, a server answering 503, a
//! server that never answers, and the address `TASKRUNNER_BIND` names.

use std::process::Output;
use std::time::Duration;

use taskrunner::config::DatabaseArgs;
use tokio_util::sync::CancellationToken;

use crate::harness::TestApp;
use crate::process::Launch;

/// Runs the check to its end. It gives up within its own timeout; the
/// deadline here only keeps a hung run from hanging the suite.
async fn run(launch: Launch) -> Output {
    let (mut command, _workdir) = launch.into_command();
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("healthcheck ended within a minute")
        .expect("run taskrunner healthcheck")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Healthy: exit 0, one line on stdout naming the URL asked.
fn assert_healthy(output: &Output, url: &str) {
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(output));
    assert_eq!(stdout(output), format!("healthy: {url} answered 200 OK\n"));
}

/// Unhealthy: exit 1 (never 2, which engines reserve), one line on stderr
/// that starts with `unhealthy:` and contains `reason`.
fn assert_unhealthy(output: &Output, reason: &str) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stdout: {}", stdout(output));
    assert!(stderr.starts_with("unhealthy: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(reason), "{reason:?} in {stderr}");
    assert_eq!(stdout(output), "");
}

/// A port of 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    socket.local_addr().expect("its address").port()
}

#[tokio::test]
async fn a_served_app_is_healthy_at_its_url() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let base = format!("http://{}", served.address);
    let output = run(Launch::healthcheck().args([base.clone()])).await;
    assert_healthy(&output, &format!("{base}/healthz"));
}

#[tokio::test]
async fn without_a_url_it_asks_the_bind_address_an_unspecified_one_on_loopback() {
    let app = TestApp::new().await;
    let served = app.serve().await;
    let (_, port) = served.address.rsplit_once(':').expect("host:port");
    let expected = format!("http://127.0.0.1:{port}/healthz");
    for bind in [served.address.clone(), format!("0.0.0.0:{port}")] {
        let output = run(Launch::healthcheck().env("TASKRUNNER_BIND", &bind)).await;
        assert_healthy(&output, &expected);
    }

    // [::] is asked on [::1]: serve the same application there.
    let socket = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("IPv6 loopback");
    let port = socket.local_addr().expect("its address").port();
    let stop = CancellationToken::new();
    let until = stop.clone().cancelled_owned();
    let router = app.router();
    tokio::spawn(async move {
        let _ = axum::serve(socket, router)
            .with_graceful_shutdown(until)
            .await;
    });
    let bind = format!("[::]:{port}");
    let output = run(Launch::healthcheck().env("TASKRUNNER_BIND", &bind)).await;
    assert_healthy(&output, &format!("http://[::1]:{port}/healthz"));
    stop.cancel();
}

#[tokio::test]
async fn a_closed_port_is_unhealthy_with_the_reason() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let output = run(Launch::healthcheck().args([url.clone()])).await;
    assert_unhealthy(&output, &format!("could not reach {url}: "));
    assert!(stderr(&output).contains("refused"), "{}", stderr(&output));

    // The bind address of the environment is where it looks.
    let output =
        run(Launch::healthcheck().env("TASKRUNNER_BIND", &format!("0.0.0.0:{port}"))).await;
    assert_unhealthy(&output, &format!("could not reach {url}: "));
}

#[tokio::test]
async fn an_answer_of_503_is_unhealthy() {
    // A real server whose database is unreachable: /healthz (alive) answers
    // 200, /readyz 503.
    let mut args = DatabaseArgs::new(format!(
        "postgres://postgres@127.0.0.1:{}/nowhere",
        closed_port()
    ));
    args.db_timeout_seconds = 1;
    let state = taskrunner::AppState::new(
        taskrunner::db::build_pool(&args).expect("a pool"),
        crate::harness::any_model_router(),
    );
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = socket.local_addr().expect("its address");
    let stop = CancellationToken::new();
    let until = stop.clone().cancelled_owned();
    let router = taskrunner::http::router(state);
    tokio::spawn(async move {
        let _ = axum::serve(socket, router)
            .with_graceful_shutdown(until)
            .await;
    });

    let ready = format!("http://{address}/readyz");
    let output = run(Launch::healthcheck().args([ready.clone()])).await;
    assert_unhealthy(
        &output,
        &format!("{ready} answered 503 Service Unavailable"),
    );
    let output = run(Launch::healthcheck().args([format!("http://{address}")])).await;
    assert_healthy(&output, &format!("http://{address}/healthz"));
    stop.cancel();
}

#[tokio::test]
async fn a_server_that_never_answers_is_unhealthy_after_the_timeout() {
    // Connections are accepted (the backlog) but nothing is ever read or written.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let url = format!(
        "http://{}/healthz",
        silent.local_addr().expect("its address")
    );
    let output = run(Launch::healthcheck().args([url.as_str(), "--timeout-seconds", "1"])).await;
    assert_unhealthy(&output, &format!("{url} did not answer within 1 s"));
    drop(silent);
}

#[tokio::test]
async fn a_bad_url_or_command_line_is_unhealthy_not_a_usage_error() {
    let output = run(Launch::healthcheck().args(["ftp://127.0.0.1/healthz"])).await;
    assert_unhealthy(&output, "is not an http:// or https:// URL");

    // Engines reserve exit status 2, clap's for a bad command line.
    for (args, env) in [
        (vec!["--no-such-option"], None),
        (vec![], Some("not an address")),
    ] {
        let mut launch = Launch::healthcheck().args(args.clone());
        if let Some(bind) = env {
            launch = launch.env("TASKRUNNER_BIND", bind);
        }
        let output = run(launch).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?} {env:?}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains("error:"), "{}", stderr(&output));
    }
}
