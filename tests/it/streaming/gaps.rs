//! Pieces an API process did not hear: it started listening mid-answer, or
//! its listening connection was cut. The saved text fills the gap, and
//! subscribers get every byte once.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{
    TASK_OUTPUT, WITHIN, app_routed, assert_well_formed, chunks, slow_echo, text_of, worker_routed,
};
use crate::proxy::{Proxy, database_address, via};
use crate::queue::create;
use crate::subscriptions::{Protocol, Received, WsClient};

const PARTIAL: &str = "query($id: ID!) { task(id: $id) { partialResult } }";

fn words(n: usize) -> String {
    (1..=n)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn a_process_that_starts_listening_mid_answer_fills_the_gap_from_the_saved_text() {
    let app = app_routed(slow_echo(60)).await;
    let worker = worker_routed(&app, slow_echo(60), 1).await;
    let prompt = words(60);
    let id = create(&app, json!({ "prompt": prompt })).await;
    // Wait until the worker has saved some text; only then does this process listen.
    let deadline = Instant::now() + WITHIN;
    loop {
        let partial = app.data(PARTIAL, json!({ "id": id })).await["task"]["partialResult"].clone();
        if partial.as_str().is_some_and(|text| text.len() > 10) {
            break;
        }
        assert!(Instant::now() < deadline, "some text is saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served = app.serve().await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_OUTPUT, json!({ "id": id })).await;
    let received = client.collect_until_complete(&sub, WITHIN).await;
    let (chunks, completed) = chunks(&received);
    assert!(completed);
    assert_well_formed(&chunks);
    assert!(
        chunks.len() >= 3,
        "the text so far, then pieces: {chunks:?}"
    );
    assert_streamed_to_the_end(&chunks);
    assert_eq!(text_of(&chunks, 1), prompt, "nothing missing or doubled");
    worker.shutdown().await;
}

#[tokio::test]
async fn after_the_listener_reconnects_the_answer_goes_on_whole() {
    let app = app_routed(slow_echo(50)).await;
    let proxy = Proxy::start(&database_address(&app.db.url)).await;
    let served = app
        .serve_on(&via(&app.db.url, &proxy.address().to_string()))
        .await;
    let worker = worker_routed(&app, slow_echo(50), 1).await;
    let prompt = words(120);
    let id = create(&app, json!({ "prompt": prompt })).await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_OUTPUT, json!({ "id": id })).await;
    let mut received = Vec::new();
    // A few pieces, then the listening connection is cut for a second while
    // the answer goes on.
    while received.len() < 3 {
        received.push(client.next_for(&sub, WITHIN).await);
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.restore();
    received.extend(client.collect_until_complete(&sub, WITHIN).await);
    let (chunks, completed) = chunks(&received);
    assert!(completed, "{received:?}");
    assert!(
        received.iter().all(|r| !matches!(r, Received::Error(_))),
        "{received:?}"
    );
    assert_well_formed(&chunks);
    assert_streamed_to_the_end(&chunks);
    assert_eq!(text_of(&chunks, 1), prompt, "nothing missing or doubled");
    worker.shutdown().await;
}

/// The answer came as it was written up to its end: the done chunk, which
/// completes it from the stored result, has little or nothing left to add
/// (were the gap never filled, it would carry everything after it).
fn assert_streamed_to_the_end(chunks: &[super::Chunk]) {
    let last = chunks.last().expect("a chunk");
    assert!(
        last.1.len() < 40,
        "the last chunk had to carry {} bytes: {chunks:?}",
        last.1.len()
    );
}
