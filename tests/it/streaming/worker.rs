//! The worker's side: pieces sent in order with their offsets and an end,
//! split to fit a payload; `partialResult` growing while a task runs,
//! without touching its row, and null once it is done.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{OutputTap, WITHIN, app_routed, slow_echo, worker_routed};
use crate::queue::{create, task, wait_for};

const PARTIAL: &str =
    "query($id: ID!) { task(id: $id) { status result partialResult updatedAt attempts } }";

#[tokio::test]
async fn pieces_are_sent_in_order_with_their_offsets_and_an_end() {
    let app = app_routed(slow_echo(20)).await;
    let mut tap = OutputTap::listen(&app.db).await;
    let worker = worker_routed(&app, slow_echo(20), 2).await;
    let prompt = "the quick brown fox jumps over the lazy dog and then some more words follow it";
    let id = create(&app, json!({ "prompt": prompt })).await;
    let heard = tap.until_done(id.parse().expect("numeric id")).await;

    let mut text = String::new();
    for (chunk, _) in &heard {
        assert_eq!(chunk.attempt, 1);
        assert_eq!(
            chunk.offset as usize,
            text.len(),
            "no gap, no overlap: {heard:?}"
        );
        text.push_str(&chunk.text);
    }
    assert_eq!(text, prompt);
    assert!(
        heard.len() > 2,
        "a slow answer is sent in several pieces: {heard:?}"
    );
    let done = wait_for(&app, &id, "SUCCEEDED", WITHIN).await;
    assert_eq!(done["result"], prompt, "the result is the pieces joined");
    worker.shutdown().await;
}

#[tokio::test]
async fn long_text_of_any_characters_fits_the_payloads() {
    // Paced, so the text is sent while it is written (an answer complete
    // before its first send is carried by the task's final state instead).
    let app = app_routed(slow_echo(1)).await;
    let mut tap = OutputTap::listen(&app.db).await;
    let worker = worker_routed(&app, slow_echo(1), 1).await;
    // 60 KB of quotes, backslashes, control characters, newlines and
    // multi-byte characters, in few words.
    let prompt = "\"quoted\"\\back\u{1}slash\u{7f}-new\nline-é€🙂\tend ".repeat(1_200);
    let id = create(&app, json!({ "prompt": prompt })).await;
    let heard = tap.until_done(id.parse().expect("numeric id")).await;

    let mut text = String::new();
    for (chunk, size) in &heard {
        assert!(*size < 8_000, "a payload of {size} bytes");
        assert_eq!(chunk.offset as usize, text.len());
        text.push_str(&chunk.text);
    }
    assert_eq!(text, prompt);
    assert!(heard.len() >= 8, "split into payloads: {}", heard.len());
    wait_for(&app, &id, "SUCCEEDED", WITHIN).await;
    worker.shutdown().await;
}

#[tokio::test]
async fn partial_result_grows_while_running_without_touching_the_row_and_is_null_after() {
    let app = app_routed(slow_echo(80)).await;
    let worker = worker_routed(&app, slow_echo(80), 1).await;
    let words: Vec<String> = (1..=50).map(|i| format!("word{i}")).collect();
    let prompt = words.join(" ");
    let id = create(&app, json!({ "prompt": prompt })).await;

    // Read it while it runs (50 words at 80 ms: about 4 s).
    let deadline = Instant::now() + WITHIN;
    let mut seen: Vec<String> = Vec::new();
    let mut running_since: Option<String> = None;
    loop {
        let now = app.data(PARTIAL, json!({ "id": id })).await["task"].clone();
        match now["status"].as_str() {
            Some("RUNNING") => {
                let updated_at = now["updatedAt"].as_str().expect("updatedAt").to_owned();
                let first = running_since.get_or_insert_with(|| updated_at.clone());
                assert_eq!(
                    *first, updated_at,
                    "saving the text so far leaves the task's row alone"
                );
                let partial = now["partialResult"].as_str().expect("text while running");
                assert!(prompt.starts_with(partial), "{partial:?} begins the answer");
                if seen.last().is_none_or(|last| last != partial) {
                    if let Some(last) = seen.last() {
                        assert!(partial.len() > last.len(), "it only grows");
                    }
                    seen.push(partial.to_owned());
                }
            }
            Some("SUCCEEDED") => {
                assert_eq!(now["partialResult"], json!(null), "null once finished");
                assert_eq!(now["result"], prompt);
                break;
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "the task ends within {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let growing: Vec<&String> = seen.iter().filter(|text| !text.is_empty()).collect();
    assert!(
        growing.len() >= 2,
        "saved about once a second, so seen growing at least twice: {seen:?}"
    );
    assert!(
        growing.iter().all(|text| text.len() < prompt.len()),
        "seen before the end: {seen:?}"
    );

    // The saved row goes once the outcome is stored.
    let client = app.db.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = client
            .query_one("SELECT count(*) FROM task_partial_results", &[])
            .await
            .expect("count")
            .get::<_, i64>(0);
        if rows == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the saved text is removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task(&app, &id).await["status"], "SUCCEEDED");
    worker.shutdown().await;
}
