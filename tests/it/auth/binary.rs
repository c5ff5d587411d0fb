//! Tokens end to end with the real binary: `taskrunner token create | list |
//! revoke`, and `serve` processes checking them.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use super::{WITHIN, assert_unauthenticated, post_graphql};
use crate::harness::TestDb;
use crate::mcp::Client;
use crate::process::{Launch, Process};

const LIST: &str = "{ tasks(first: 5) { edges { node { id } } } }";

/// Runs `taskrunner token <args>` on `db` to its end; returns its stdout,
/// failing the test (with stderr) if it fails.
async fn token_command(db: &TestDb, args: &[&str]) -> String {
    let (mut command, _workdir) = Launch::token()
        .database(&db.url)
        .args(args.iter().copied())
        .into_command();
    let output = tokio::time::timeout(
        WITHIN,
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("the token command ends")
    .expect("it runs");
    assert!(
        output.status.success(),
        "taskrunner token {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 on stdout")
}

/// `serve` with tokens on and no workers.
fn serve_with_tokens(db: &TestDb) -> Process {
    Launch::serve()
        .database(&db.url)
        .args(["--auth", "tokens", "--workers", "0"])
        .spawn()
}

#[tokio::test]
async fn a_token_made_listed_expired_and_revoked_through_the_cli() {
    let db = TestDb::migrated().await;
    let stdout = token_command(
        &db,
        &[
            "create", "--tenant", "acme", "--name", "ci", "--role", "member",
        ],
    )
    .await;
    let secret = stdout.trim().to_owned();
    assert_eq!(stdout.lines().count(), 1, "the secret alone: {stdout:?}");
    assert!(secret.starts_with("trk_") && secret.len() >= 47, "{secret}");

    // Nothing of the secret past its shown prefix is stored, in any column.
    let client = db.client().await;
    let rows = client
        .query("SELECT t::text FROM api_tokens t", &[])
        .await
        .expect("tokens");
    assert_eq!(rows.len(), 1);
    let stored: String = rows[0].get(0);
    let hidden = &secret[12..];
    for start in 0..=hidden.len() - 8 {
        let piece = &hidden[start..start + 8];
        assert!(!stored.contains(piece), "{piece:?} is stored: {stored}");
    }
    assert!(
        stored.contains(&secret[..12]),
        "the prefix is kept: {stored}"
    );

    let listed = token_command(&db, &["list"]).await;
    assert!(
        listed.contains(&secret[..12]) && listed.contains("acme"),
        "{listed}"
    );
    assert!(!listed.contains(hidden), "{listed}");

    let first = serve_with_tokens(&db);
    let second = serve_with_tokens(&db);
    let (first, second) = (first, second);
    let addresses = [first.address().await, second.address().await];
    let bearer = format!("Bearer {secret}");
    for address in &addresses {
        let (status, _, body) = post_graphql(address, Some(&bearer), LIST).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        assert_unauthenticated(&post_graphql(address, None, LIST).await, "no token");
    }

    // An expired token (expiry set in the past in SQL) is refused.
    let expiring = token_command(
        &db,
        &["create", "--tenant", "acme", "--expires-in-days", "3"],
    )
    .await;
    let expiring = expiring.trim();
    let days: f64 = client
        .query_one(
            "SELECT extract(epoch FROM expires_at - created_at)::float8 / 86400 FROM api_tokens WHERE prefix = $1",
            &[&&expiring[..12]],
        )
        .await
        .expect("the expiring token")
        .get(0);
    assert!((days - 3.0).abs() < 0.01, "{days}");
    client
        .execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE prefix = $1",
            &[&&expiring[..12]],
        )
        .await
        .expect("expire it");
    let answer = post_graphql(&addresses[0], Some(&format!("Bearer {expiring}")), LIST).await;
    assert_unauthenticated(&answer, "expired");

    // Revoked through the CLI: the second process, which has just accepted
    // the token (so holds it in its cache), refuses it within a second.
    let id: i64 = client
        .query_one("SELECT id FROM api_tokens WHERE name = 'ci'", &[])
        .await
        .expect("the token")
        .get(0);
    let (status, _, _) = post_graphql(&addresses[1], Some(&bearer), LIST).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    token_command(&db, &["revoke", &id.to_string()]).await;
    // The command has returned, so the revocation has committed. Poll every
    // 20 ms: a request sent a second or more after that must be refused,
    // however slowly this shared machine runs the polls (the server's
    // cached verdict is older than the revocation, and lives 500 ms).
    let revoked = tokio::time::Instant::now();
    loop {
        let sent = tokio::time::Instant::now();
        let (status, _, _) = post_graphql(&addresses[1], Some(&bearer), LIST).await;
        if status == reqwest::StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            sent.duration_since(revoked) < Duration::from_secs(1),
            "a request sent {:?} after the revocation was still accepted",
            sent.duration_since(revoked)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // How long after the revocation committed the first refusal came, by the
    // database's clock (revoked_at is the revoking transaction's now()): at
    // most one poll and one query longer than the true delay.
    let since_revoke: f64 = client
        .query_one(
            "SELECT extract(epoch FROM clock_timestamp() - revoked_at)::float8 FROM api_tokens WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the revoked token")
        .get(0);
    eprintln!("revoked token refused {since_revoke:.3} s after the revocation committed");
    let answer = post_graphql(&addresses[0], Some(&bearer), LIST).await;
    assert_unauthenticated(&answer, "revoked, on the first process");
    let listed = token_command(&db, &["list"]).await;
    let line = listed
        .lines()
        .find(|line| line.contains(&secret[..12]))
        .expect("the revoked token is listed");
    assert_eq!(
        // Times of day (`08:48:06Z`): the prefix may hold a Z of its own.
        line.split_whitespace()
            .filter(|field| field.ends_with('Z') && field.contains(':'))
            .count(),
        3,
        "created, last used and revoked: {line}"
    );
}

#[tokio::test]
async fn tokens_are_on_by_default_off_loopback() {
    let db = TestDb::migrated().await;
    let open = Launch::serve()
        .database(&db.url)
        .args(["--workers", "0"])
        .spawn();
    let wide = Launch::serve_on("0.0.0.0:0")
        .database(&db.url)
        .args(["--workers", "0"])
        .spawn();
    let wide_open = Launch::serve_on("0.0.0.0:0")
        .database(&db.url)
        .args(["--workers", "0", "--auth", "off"])
        .spawn();

    let (status, _, body) = post_graphql(&open.address().await, None, LIST).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(body.get("errors").is_none(), "{body}");

    let loopback = |address: String| address.replace("0.0.0.0", "127.0.0.1");
    let answer = post_graphql(&loopback(wide.address().await), None, LIST).await;
    assert_unauthenticated(&answer, "0.0.0.0 without --auth");

    let (status, _, _) = post_graphql(&loopback(wide_open.address().await), None, LIST).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    wide_open
        .wait_for_event(
            "a warning that tokens are off",
            |event| {
                event["level"] == "WARN"
                    && event["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("tokens are off"))
            },
            WITHIN,
        )
        .await;
}

#[tokio::test]
async fn mcp_with_a_tenant_acts_for_that_tenant_only() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO tenants (name) VALUES ('acme'), ('other');
             INSERT INTO tasks (prompt, model, tenant) VALUES
                 ('mine', 'echo', 'acme'), ('theirs', 'echo', 'other');",
        )
        .await
        .expect("tenants and tasks");

    let refused = Launch::mcp()
        .database(&db.url)
        .args(["--tenant", "nosuch"])
        .spawn();
    let mut refused = refused;
    let exited = refused
        .wait_for_exit(WITHIN)
        .await
        .expect("mcp --tenant nosuch exits");
    assert!(!exited.status.success());
    refused.wait_for_log_end(WITHIN).await;
    assert!(
        refused
            .lines()
            .iter()
            .any(|l| l.contains("no tenant is named")),
        "{}",
        refused.tail(10)
    );

    let mcp = Client::stdio(Launch::mcp().database(&db.url).args(["--tenant", "acme"])).await;
    let listed = mcp.ok("list_tasks", json!({})).await;
    let prompts: Vec<&str> = listed["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|task| task["prompt"].as_str())
        .collect();
    assert_eq!(prompts, ["mine"], "{listed}");
    mcp.ok("create_task", json!({ "prompt": "new", "model": "echo" }))
        .await;
    let tenant: String = client
        .query_one("SELECT tenant FROM tasks WHERE prompt = 'new'", &[])
        .await
        .expect("the new task")
        .get(0);
    assert_eq!(tenant, "acme");
}

#[tokio::test]
async fn the_workers_metrics_ask_for_the_metrics_token() {
    let db = TestDb::migrated().await;
    let worker = Launch::worker()
        .database(&db.url)
        .args(["--metrics-token", "scrape-the-worker"])
        .spawn();
    let address = worker.address().await;
    let http = reqwest::Client::new();
    let url = format!("http://{address}/metrics");
    let refused = http.get(&url).send().await.expect("answer");
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    let wrong = http
        .get(&url)
        .bearer_auth("scrape-the-workers")
        .send()
        .await
        .expect("answer");
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);
    let scraped = http
        .get(&url)
        .bearer_auth("scrape-the-worker")
        .send()
        .await
        .expect("answer");
    assert_eq!(scraped.status(), reqwest::StatusCode::OK);
    let health = http
        .get(format!("http://{address}/healthz"))
        .send()
        .await
        .expect("answer");
    assert_eq!(
        health.status(),
        reqwest::StatusCode::OK,
        "health stays open"
    );
}
