//! `taskOutput` on a `serve --workers 0` process for a task run by a
//! separate `taskrunner worker` process: the pieces cross processes through
//! PostgreSQL alone.

use serde_json::{Value, json};

use super::{TASK_OUTPUT, WITHIN, assert_well_formed, chunks, text_of};
use crate::fake_provider::FakeProvider;
use crate::harness::TestDb;
use crate::process::{Launch, ProviderConfig};
use crate::subscriptions::{Protocol, WsClient};

#[tokio::test]
async fn an_api_process_streams_the_answer_a_worker_process_writes() {
    let fake = FakeProvider::start().await;
    let db = TestDb::migrated().await;
    let providers = ProviderConfig::for_fake(&fake);
    let api = Launch::serve()
        .database(&db.url)
        .providers(&providers)
        .args(["--workers", "0"])
        .spawn();
    let address = api.address().await;
    let prompt = "stream-slow:80:one two three four five six seven eight";
    let created: Value = reqwest::Client::new()
        .post(format!("http://{address}/graphql"))
        .json(&json!({
            "query": "mutation($p: String!) { createTask(input: { prompt: $p, model: \"m\" }) { id } }",
            "variables": { "p": prompt }
        }))
        .send()
        .await
        .expect("createTask is answered")
        .json()
        .await
        .expect("a JSON answer");
    let id = created["data"]["createTask"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let mut client = WsClient::connect(&address, Protocol::TransportWs).await;
    let sub = client.subscribe(TASK_OUTPUT, json!({ "id": id })).await;

    let _worker = Launch::worker()
        .database(&db.url)
        .providers(&providers)
        .spawn();
    let received = client.collect_until_complete(&sub, WITHIN).await;
    let (chunks, completed) = chunks(&received);
    assert!(completed, "{received:?}");
    assert_well_formed(&chunks);
    assert!(chunks.len() >= 3, "in pieces, as written: {chunks:?}");
    assert_eq!(
        text_of(&chunks, 1),
        "one two three four five six seven eight"
    );
    let result = db
        .client()
        .await
        .query_one(
            "SELECT result FROM tasks WHERE id = $1",
            &[&id.parse::<i64>().expect("an id")],
        )
        .await
        .expect("the task")
        .get::<_, Option<String>>(0);
    assert_eq!(result.as_deref(), Some(text_of(&chunks, 1).as_str()));
}
