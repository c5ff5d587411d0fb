//! The provider layer as the API and the worker use it, against the fake
//! provider over real HTTP: routing by the models a provider lists, what a
//! refusal to list them does to `createTask`, attempt timeouts, and the
//! per-provider concurrency limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use taskrunner::AppState;
use taskrunner::providers::config::{ProviderSettings, router_from};
use taskrunner::providers::routing::{ModelRouter, Unroutable};
use taskrunner::providers::{CompletionRequest, FailureKind, ProviderError};

use crate::fake_provider::FakeProvider;
use crate::harness::{TestApp, TestDb, error_code, error_field};

/// Long enough for a local server to list its models on a busy machine.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(10);

const CREATE: &str =
    "mutation($input: CreateTaskInput!) { createTask(input: $input) { id model status } }";

fn router(settings: Vec<ProviderSettings>) -> Arc<ModelRouter> {
    Arc::new(router_from(settings).expect("router"))
}

/// The API over a test database, with `router`'s routes.
async fn app_with(router: Arc<ModelRouter>) -> TestApp {
    let db = TestDb::migrated().await;
    let state = AppState::new(db.pool(), router);
    TestApp {
        schema: taskrunner::graphql::schema(state.clone()),
        state,
        db,
    }
}

async fn create_task(app: &TestApp, model: &str) -> Value {
    app.gql(
        CREATE,
        json!({ "input": { "prompt": "hello", "model": model } }),
    )
    .await
}

async fn stored_tasks(app: &TestApp) -> i64 {
    let client = app.db.client().await;
    client
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .expect("count tasks")
        .get(0)
}

fn asking(prompt: &str) -> CompletionRequest {
    CompletionRequest {
        model: "fake-small".to_owned(),
        prompt: prompt.to_owned(),
        system: None,
        temperature: None,
        max_tokens: None,
    }
}

fn model_names(router: &ModelRouter) -> Vec<String> {
    router.models().into_iter().map(|m| m.name).collect()
}

#[tokio::test]
async fn a_call_outlasts_the_providers_timeout_seconds_which_is_only_a_default() {
    let fake = FakeProvider::start().await;
    let router = router(vec![fake.settings_with(
        "models = [\"fake-small\"]\ndiscover_models = false\ntimeout_seconds = 1",
    )]);
    let entry = router.route("fake-small").expect("routed");

    // Under the old whole-request timeout of timeout_seconds, this failed after 1 s.
    let completion = entry
        .complete(&asking("slow:2000:took two seconds"))
        .await
        .expect("no hidden cap on the call");
    assert_eq!(completion.text, "took two seconds");

    let default = Duration::from_secs(300);
    assert_eq!(
        entry.attempt_timeout(Some(7200), default),
        Duration::from_secs(7200),
        "the task's own timeout wins"
    );
    assert_eq!(
        entry.attempt_timeout(None, default),
        Duration::from_secs(1),
        "then the provider's"
    );
    let echo = router.route("echo").expect("echo is always served");
    assert_eq!(
        echo.attempt_timeout(None, default),
        default,
        "then the default"
    );
}

#[tokio::test]
async fn an_attempt_timeout_ends_the_call_and_closes_its_request() {
    let fake = FakeProvider::start().await;
    let router = router(vec![fake.settings()]);
    let entry = router.route("any-model").expect("routed");

    let outcome = entry
        .complete_within(&asking("hang"), Duration::from_millis(300))
        .await;
    assert_eq!(
        outcome,
        Err(ProviderError::Retryable {
            message: "fake: the attempt timed out after 0.3 s".to_owned(),
            retry_after: None,
            kind: FailureKind::Timeout,
        })
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake.aborted().contains(&"hang".to_owned()) {
        assert!(Instant::now() < deadline, "the fake saw the request closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let completion = entry
        .complete_within(&asking("quick"), Duration::from_secs(30))
        .await
        .expect("an answer within the timeout");
    assert_eq!(completion.text, "QUICK");
}

#[tokio::test]
async fn a_provider_refusing_its_model_list_refuses_tasks_until_it_lists_them() {
    for (status, status_line) in [(401, "401 Unauthorized"), (403, "403 Forbidden")] {
        let fake = FakeProvider::start().await;
        fake.set_models_status(status);
        let router = router(vec![fake.settings_with("")]);
        router.refresh(REFRESH_TIMEOUT).await;

        let expected = format!(
            "provider \"fake\" refused to list its models (HTTP {status_line}): check its API key"
        );
        let refusal = router.route("fake-small").expect_err("refused");
        assert!(
            matches!(&refusal, Unroutable::ProviderRefused { provider, status: s } if provider == "fake" && s.as_u16() == status),
            "{refusal:?}"
        );
        assert_eq!(refusal.message(), expected);
        assert!(
            router.route("any-other-name").is_err(),
            "it does not serve any name"
        );
        assert_eq!(model_names(&router), ["echo"]);

        let app = app_with(Arc::clone(&router)).await;
        let response = create_task(&app, "fake-small").await;
        assert_eq!(
            error_code(&response),
            "PROVIDER_UNAVAILABLE",
            "{response:#}"
        );
        assert_eq!(response["errors"][0]["message"], expected.as_str());
        assert_eq!(response["data"], Value::Null);
        assert_eq!(stored_tasks(&app).await, 0, "nothing was stored");
        let echoed = create_task(&app, "echo").await;
        assert!(echoed.get("errors").is_none(), "{echoed:#}");

        // The provider's key is fixed: the next refresh lets its models through.
        fake.set_models_status(200);
        router.refresh(REFRESH_TIMEOUT).await;
        let created = create_task(&app, "fake-small").await;
        assert_eq!(
            created["data"]["createTask"]["status"], "PENDING",
            "{created:#}"
        );
        let unknown = create_task(&app, "not-listed").await;
        assert_eq!(error_code(&unknown), "BAD_USER_INPUT", "{unknown:#}");
        assert_eq!(error_field(&unknown), "model");
        assert_eq!(stored_tasks(&app).await, 2);
    }
}

#[tokio::test]
async fn a_model_list_that_fails_otherwise_leaves_any_name_served() {
    let fake = FakeProvider::start().await;
    fake.set_models_status(500);
    let router = router(vec![fake.settings_with("")]);
    router.refresh(REFRESH_TIMEOUT).await;
    assert!(fake.model_list_calls() >= 1);
    assert_eq!(router.route("whatever").expect("served").name, "fake");
    assert_eq!(model_names(&router), ["*", "echo"]);

    let app = app_with(Arc::clone(&router)).await;
    let created = create_task(&app, "whatever").await;
    assert_eq!(
        created["data"]["createTask"]["model"], "whatever",
        "{created:#}"
    );

    // A provider that does not answer in time is the same: a listener that never replies.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = silent.local_addr().expect("address");
    let settings: ProviderSettings = toml::from_str(&format!(
        "name = \"silent\"\nbase_url = \"http://{address}/v1\""
    ))
    .expect("settings");
    let router = router_from(vec![settings]).expect("router");
    router.refresh(Duration::from_millis(300)).await;
    assert_eq!(router.route("whatever").expect("served").name, "silent");
    drop(silent);
}

#[tokio::test]
async fn refresh_picks_up_a_changed_model_list() {
    let fake = FakeProvider::start().await;
    fake.set_models(&["alpha", "beta"]);
    let router = router(vec![fake.settings_with("")]);
    router.refresh(REFRESH_TIMEOUT).await;
    let routed = |model: &str| router.route(model).map(|entry| entry.name.clone());
    assert_eq!(routed("alpha").as_deref(), Ok("fake"));
    assert!(matches!(
        routed("gamma"),
        Err(Unroutable::NoProvider { .. })
    ));
    assert_eq!(model_names(&router), ["alpha", "beta", "echo"]);

    fake.set_models(&["beta", "gamma"]);
    router.refresh(REFRESH_TIMEOUT).await;
    assert_eq!(
        routed("gamma").as_deref(),
        Ok("fake"),
        "a model added is routed"
    );
    let removed = routed("alpha").expect_err("a model removed is not");
    assert!(
        matches!(&removed, Unroutable::NoProvider { model, .. } if model == "alpha"),
        "{removed:?}"
    );
    assert_eq!(
        removed.message(),
        "no provider serves model \"alpha\"; known models: beta, gamma, echo"
    );
    assert_eq!(fake.model_list_calls(), 2);
}

#[tokio::test]
async fn a_providers_max_concurrency_holds_inside_the_provider_layer() {
    let fake = FakeProvider::start().await;
    let router = router(vec![fake.settings_with(
        "model_prefixes = [\"\"]\ndiscover_models = false\nmax_concurrency = 2",
    )]);
    let entry = router.route("any-model").expect("routed");

    let calls = (0..10).map(|i| {
        let entry = Arc::clone(&entry);
        tokio::spawn(async move {
            entry
                .complete(&asking(&format!("slow:300:answer {i}")))
                .await
        })
    });
    let answers = futures_util::future::join_all(calls).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let completion = answer.expect("no panic").expect("an answer");
        assert_eq!(completion.text, format!("answer {i}"));
    }
    assert_eq!(fake.calls().len(), 10, "all ten were called");
    assert_eq!(
        fake.max_in_flight(),
        2,
        "never more than two at once, and two did run together"
    );
    assert_eq!(
        entry.limiter.available_permits(),
        2,
        "every place is given back"
    );
}
