//! `taskOutput` in one process: over a real WebSocket, and in-process for a
//! subscriber that stops reading a while.

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::json;

use super::{
    Chunk, TASK_OUTPUT, WITHIN, app_routed, assert_well_formed, chunk_of, chunks, slow_echo,
    text_of, worker_routed,
};
use crate::fake_provider::FakeProvider;
use crate::harness::error_code;
use crate::queue::{app_with, create, start_worker, test_config, wait_for};
use crate::subscriptions::{Protocol, Received, WsClient};

#[tokio::test]
async fn chunks_come_in_order_and_done_last_and_join_to_the_result() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let served = app.serve().await;
    let id = create(
        &app,
        json!({ "prompt": "stream-slow:60:one two three four five six" }),
    )
    .await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_OUTPUT, json!({ "id": id })).await;
    // Subscribed while PENDING; the worker starts after.
    let worker = start_worker(&app, &fake, test_config(2)).await;
    let received = client.collect_until_complete(&sub, WITHIN).await;
    let (chunks, completed) = chunks(&received);
    assert!(completed, "{received:?}");
    assert_well_formed(&chunks);
    assert!(chunks.len() >= 3, "streamed in pieces: {chunks:?}");
    assert!(chunks.iter().all(|c| c.0 == 1), "one attempt: {chunks:?}");

    let done = wait_for(&app, &id, "SUCCEEDED", WITHIN).await;
    assert_eq!(done["result"], "one two three four five six");
    assert_eq!(text_of(&chunks, 1), "one two three four five six");
    let Received::Next(first) = &received[0] else {
        panic!()
    };
    assert_eq!(first["data"]["taskOutput"]["taskId"], id);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_late_subscriber_first_gets_the_text_so_far_then_the_rest() {
    let app = app_routed(slow_echo(100)).await;
    let served = app.serve().await;
    let worker = worker_routed(&app, slow_echo(100), 1).await;
    let words: Vec<String> = (1..=30).map(|i| format!("w{i}")).collect();
    let prompt = words.join(" ");
    let id = create(&app, json!({ "prompt": prompt })).await;

    let mut early = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let early_sub = early.subscribe(TASK_OUTPUT, json!({ "id": id })).await;
    // Let the first subscriber see a few pieces, then a second one joins.
    let mut seen = String::new();
    while seen.len() < 20 {
        let Received::Next(chunk) = early.next_for(&early_sub, WITHIN).await else {
            panic!("the answer ended early")
        };
        seen.push_str(&chunk_of(&chunk["data"]["taskOutput"]).1);
    }
    let mut late = WsClient::connect(&served.address, Protocol::LegacyWs).await;
    let late_sub = late.subscribe(TASK_OUTPUT, json!({ "id": id })).await;
    let received = late.collect_until_complete(&late_sub, WITHIN).await;
    let (late_chunks, completed) = chunks(&received);
    assert!(completed);
    assert_well_formed(&late_chunks);
    let first = &late_chunks[0].1;
    assert!(
        first.len() >= seen.len() && prompt.starts_with(first.as_str()),
        "the first chunk is the text so far ({} bytes seen before joining): {first:?}",
        seen.len()
    );
    assert!(
        first.len() < prompt.len(),
        "joined mid-answer: {late_chunks:?}"
    );
    assert!(late_chunks.len() >= 3, "then pieces: {late_chunks:?}");
    assert_eq!(
        text_of(&late_chunks, 1),
        prompt,
        "nothing missing or doubled"
    );

    let rest = early.collect_until_complete(&early_sub, WITHIN).await;
    let (early_rest, _) = chunks(&rest);
    assert_eq!(seen + &text_of(&early_rest, 1), prompt);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_retry_starts_over_with_its_attempt_number() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let served = app.serve().await;
    let prompt = "cut-once:60:alpha beta gamma delta epsilon zeta";
    let id = create(&app, json!({ "prompt": prompt })).await;
    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_OUTPUT, json!({ "id": id })).await;
    let worker = start_worker(&app, &fake, test_config(1)).await;
    let received = client.collect_until_complete(&sub, WITHIN).await;
    let (chunks, completed) = chunks(&received);
    assert!(completed);
    assert_well_formed(&chunks);

    let first = text_of(&chunks, 1);
    assert!(
        !first.is_empty() && "alpha beta gamma ".starts_with(first.as_str()),
        "the first attempt's text, cut: {chunks:?}"
    );
    assert_eq!(
        text_of(&chunks, 2),
        "alpha beta gamma delta epsilon zeta",
        "the retry's answer from its start: {chunks:?}"
    );
    assert_eq!(chunks.last().map(|c| c.0), Some(2));
    let done = wait_for(&app, &id, "SUCCEEDED", WITHIN).await;
    assert_eq!(done["attempts"], 2);
    worker.shutdown().await;
}

#[tokio::test]
async fn a_finished_task_gives_one_done_chunk_and_a_missing_one_not_found() {
    let fake = FakeProvider::start().await;
    let app = app_with(&fake).await;
    let served = app.serve().await;
    let worker = start_worker(&app, &fake, test_config(2)).await;
    let succeeded = create(&app, json!({ "prompt": "all of it" })).await;
    let failed = create(&app, json!({ "prompt": "status:400" })).await;
    wait_for(&app, &succeeded, "SUCCEEDED", WITHIN).await;
    wait_for(&app, &failed, "FAILED", WITHIN).await;

    let mut client = WsClient::connect(&served.address, Protocol::TransportWs).await;
    for (id, text) in [(&succeeded, "ALL OF IT"), (&failed, "")] {
        let sub = client.subscribe(TASK_OUTPUT, json!({ "id": id })).await;
        let received = client.collect_until_complete(&sub, WITHIN).await;
        let (chunks, completed) = chunks(&received);
        assert!(completed);
        assert_eq!(chunks, [(1, text.to_owned(), true)], "{id}");
    }

    for (id, code) in [("999999", "NOT_FOUND"), ("abc", "BAD_USER_INPUT")] {
        let sub = client.subscribe(TASK_OUTPUT, json!({ "id": id })).await;
        let errors = match client.next_for(&sub, WITHIN).await {
            Received::Error(errors) => errors,
            // A resolver's error comes as a result with errors.
            Received::Next(payload) => payload["errors"].clone(),
            other => panic!("{id}: {other:?}"),
        };
        assert_eq!(errors[0]["extensions"]["code"], code, "{errors}");
        let message = errors[0]["message"].as_str().expect("a message");
        assert!(
            !message.contains("SELECT") && !message.contains("src/"),
            "{message}"
        );
    }
    // The same codes in-process.
    let response = app
        .gql(
            TASK_OUTPUT.replace("subscription", "query").as_str(),
            json!({ "id": "1" }),
        )
        .await;
    assert!(
        response["errors"].is_array(),
        "taskOutput is no query: {response}"
    );
    let mut stream = app.schema.execute_stream(
        async_graphql::Request::new(TASK_OUTPUT)
            .variables(async_graphql::Variables::from_json(
                json!({ "id": "424242" }),
            ))
            .data(taskrunner::auth::Principal::operator()),
        None,
    );
    let response = serde_json::to_value(stream.next().await.expect("a response")).expect("json");
    assert_eq!(error_code(&response), "NOT_FOUND");
    worker.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_gets_what_it_missed_as_one_chunk() {
    let app = app_routed(slow_echo(15)).await;
    let _served = app.serve().await;
    let worker = worker_routed(&app, slow_echo(15), 1).await;
    let words: Vec<String> = (1..=600).map(|i| format!("w{i}")).collect();
    let prompt = words.join(" ");
    let id = create(&app, json!({ "prompt": prompt })).await;
    let request = || {
        async_graphql::Request::new(TASK_OUTPUT)
            .variables(async_graphql::Variables::from_json(json!({ "id": id })))
            .data(taskrunner::auth::Principal::operator())
    };
    let mut stalled = app.schema.execute_stream(request(), None);
    let mut reading = app.schema.execute_stream(request(), None);
    // The stalled one reads its first chunk (so it follows the answer), then
    // nothing until the answer is done.
    let first = read_until(&mut stalled, |_| true).await;
    // One reader keeps up (600 words, 15 ms apart: about 9 s, well over a
    // hundred pieces)…
    let kept_up = read_until(&mut reading, |chunk| chunk.2).await;
    // …while the other read nothing until the answer was done.
    let caught_up = [first, read_until(&mut stalled, |chunk| chunk.2).await].concat();
    assert_well_formed(&kept_up);
    assert_well_formed(&caught_up);
    assert!(
        kept_up.len() > 64,
        "more pieces than a subscriber's buffer: {}",
        kept_up.len()
    );
    assert!(
        caught_up.len() < 5,
        "the laggard got what it missed in a chunk or two: {caught_up:?}"
    );
    let done = caught_up.last().expect("a last chunk");
    assert!(
        done.1.len() < 40,
        "what it missed came from the kept text, not the stored result: {caught_up:?}"
    );
    assert_eq!(text_of(&kept_up, 1), prompt);
    assert_eq!(text_of(&caught_up, 1), prompt);
    worker.shutdown().await;
}

/// Reads `taskOutput` chunks from an in-process stream until one is `last`.
async fn read_until(
    stream: &mut futures_util::stream::BoxStream<'static, async_graphql::Response>,
    last: impl Fn(&Chunk) -> bool,
) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let deadline = Instant::now() + WITHIN;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(response)) = tokio::time::timeout(left, stream.next()).await else {
            panic!("the stream ended or stalled: {chunks:?}");
        };
        let response = serde_json::to_value(response).expect("json");
        let chunk = chunk_of(&response["data"]["taskOutput"]);
        let stop = last(&chunk);
        chunks.push(chunk);
        if stop {
            return chunks;
        }
    }
}
