//! The provider layer as the worker uses it, against the fake provider over
//! real HTTP: attempt timeouts and the per-provider concurrency limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use taskrunner::providers::config::{ProviderSettings, router_from};
use taskrunner::providers::routing::ModelRouter;
use taskrunner::providers::{CompletionRequest, ProviderError};

use crate::fake_provider::FakeProvider;

fn router(settings: Vec<ProviderSettings>) -> Arc<ModelRouter> {
    Arc::new(router_from(settings).expect("router"))
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

#[tokio::test]
async fn a_call_outlasts_the_providers_timeout_seconds_which_is_only_a_default() {
    let fake = FakeProvider::start().await;
    let router = router(vec![fake.settings_with(
        "models = [\"fake-small\"]\ndiscover_models = false\ntimeout_seconds = 1",
    )]);
    let entry = router.resolve("fake-small").expect("routed");

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
    let echo = router.resolve("echo").expect("echo is always served");
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
    let entry = router.resolve("any-model").expect("routed");

    let outcome = entry
        .complete_within(&asking("hang"), Duration::from_millis(300))
        .await;
    assert_eq!(
        outcome,
        Err(ProviderError::Retryable {
            message: "fake: the attempt timed out after 0.3 s".to_owned(),
            retry_after: None,
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
async fn a_providers_max_concurrency_holds_inside_the_provider_layer() {
    let fake = FakeProvider::start().await;
    let router = router(vec![fake.settings_with(
        "model_prefixes = [\"\"]\ndiscover_models = false\nmax_concurrency = 2",
    )]);
    let entry = router.resolve("any-model").expect("routed");

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
