//! The OpenAI-compatible provider against a real local HTTP server that plays
//! the provider: what we send, how we read answers, how we classify failures.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use taskrunner::providers::body::caps;
use taskrunner::providers::openai::{OpenAiConfig, OpenAiProvider};
use taskrunner::providers::{CompletionRequest, ModelListError, ProviderError};

const KEY: &str = "sk-test-0123456789abcdef";

/// One request the fake provider received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// What the fake provider answers to every request.
#[derive(Clone)]
struct Reply {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Reply {
            status: StatusCode::from_u16(status).expect("status"),
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Reply::json(
            status,
            json!({"error": {"message": message, "type": "invalid_request_error", "code": null}}),
        )
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

#[derive(Clone)]
struct FakeState {
    reply: Reply,
    received: Arc<Mutex<Vec<Received>>>,
}

/// A fake provider listening on a free local port.
struct FakeProvider {
    base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl FakeProvider {
    async fn start(reply: Reply) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState {
            reply,
            received: received.clone(),
        };
        let router = Router::new().fallback(record_and_reply).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("local address");
        tokio::spawn(async move { axum::serve(listener, router).await.expect("fake provider") });
        FakeProvider {
            base_url: format!("http://{address}/v1"),
            received,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    fn provider(&self, api_key: Option<&str>) -> OpenAiProvider {
        provider(&self.base_url, api_key)
    }
}

async fn record_and_reply(
    State(state): State<FakeState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    state.received.lock().expect("lock").push(Received {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    tokio::time::sleep(state.reply.delay).await;
    let mut response = (state.reply.status, state.reply.body.clone()).into_response();
    for (name, value) in &state.reply.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    response
}

fn provider(base_url: &str, api_key: Option<&str>) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiConfig {
        name: "openai".to_owned(),
        base_url: base_url.to_owned(),
        api_key: api_key.map(str::to_owned),
    })
    .expect("provider")
}

fn request() -> CompletionRequest {
    CompletionRequest {
        model: "gpt-4o-mini".to_owned(),
        prompt: "Say hello".to_owned(),
        system: Some("Be brief.".to_owned()),
        temperature: Some(0.25),
        max_tokens: Some(64),
    }
}

fn answer(text: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    })
}

/// The message and wait of a retryable error; panics on anything else.
fn retryable(result: Result<impl std::fmt::Debug, ProviderError>) -> (String, Option<Duration>) {
    match result {
        Err(ProviderError::Retryable {
            message,
            retry_after,
            ..
        }) => (message, retry_after),
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

/// The message of a permanent error; panics on anything else.
fn permanent(result: Result<impl std::fmt::Debug, ProviderError>) -> String {
    match result {
        Err(ProviderError::Permanent { message, .. }) => message,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn completion_sends_the_request_and_reads_the_answer() {
    let fake = FakeProvider::start(Reply::json(200, answer("Hello!"))).await;
    let completion = fake
        .provider(Some(KEY))
        .complete(&request())
        .await
        .expect("completion");

    assert_eq!(completion.text, "Hello!");
    assert_eq!(completion.prompt_tokens, Some(12));
    assert_eq!(completion.completion_tokens, Some(3));

    let received = fake.received();
    assert_eq!(received.len(), 1, "exactly one request: we never retry");
    let sent = &received[0];
    assert_eq!(sent.method, Method::POST);
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.headers
            .get(header::AUTHORIZATION)
            .expect("authorization"),
        &format!("Bearer {KEY}")
    );
    assert_eq!(
        sent.headers
            .get(header::CONTENT_TYPE)
            .expect("content type"),
        "application/json"
    );
    let user_agent = sent.headers.get(header::USER_AGENT).expect("user agent");
    assert!(
        user_agent
            .to_str()
            .expect("ascii")
            .starts_with("taskrunner/")
    );
    assert_eq!(
        sent.body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello"}
            ],
            "temperature": 0.25,
            "max_tokens": 64,
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[tokio::test]
async fn optional_fields_and_usage_are_left_out_when_unset() {
    let reply = json!({"choices": [{"message": {"role": "assistant", "content": "Hi"}}]});
    let fake = FakeProvider::start(Reply::json(200, reply)).await;
    let request = CompletionRequest {
        system: None,
        temperature: None,
        max_tokens: None,
        ..request()
    };
    let completion = fake
        .provider(Some(KEY))
        .complete(&request)
        .await
        .expect("completion");

    assert_eq!(completion.text, "Hi");
    assert_eq!(completion.prompt_tokens, None);
    assert_eq!(completion.completion_tokens, None);
    assert_eq!(
        fake.received()[0].body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Say hello"}],
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );
}

#[tokio::test]
async fn no_authorization_header_without_a_key() {
    let fake = FakeProvider::start(Reply::json(200, answer("ok"))).await;
    for key in [None, Some(""), Some("  ")] {
        fake.provider(key)
            .complete(&request())
            .await
            .expect("completion");
    }
    let received = fake.received();
    assert_eq!(received.len(), 3);
    for sent in received {
        assert_eq!(sent.headers.get(header::AUTHORIZATION), None);
    }
}

#[tokio::test]
async fn rate_limit_is_retryable_after_the_seconds_given() {
    let reply =
        Reply::error(429, "Rate limit reached for gpt-4o-mini").with_header("retry-after", "7");
    let fake = FakeProvider::start(reply).await;
    let (message, retry_after) = retryable(fake.provider(Some(KEY)).complete(&request()).await);

    assert_eq!(
        message,
        "openai: HTTP 429 Too Many Requests: Rate limit reached for gpt-4o-mini"
    );
    assert_eq!(retry_after, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn unavailable_is_retryable_after_the_date_given() {
    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(30);
    let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let fake =
        FakeProvider::start(Reply::error(503, "overloaded").with_header("retry-after", date)).await;
    let (message, retry_after) = retryable(fake.provider(Some(KEY)).complete(&request()).await);

    assert!(
        message.starts_with("openai: HTTP 503 Service Unavailable"),
        "{message}"
    );
    let retry_after = retry_after.expect("a wait");
    assert!(
        (Duration::from_secs(25)..=Duration::from_secs(30)).contains(&retry_after),
        "{retry_after:?}"
    );
}

#[tokio::test]
async fn server_errors_timeouts_and_conflicts_are_retryable() {
    for status in [500, 502, 408, 409] {
        let fake =
            FakeProvider::start(Reply::error(status, "try later").with_header("retry-after", "3"))
                .await;
        let (message, retry_after) = retryable(fake.provider(Some(KEY)).complete(&request()).await);
        assert!(
            message.starts_with(&format!("openai: HTTP {status} ")),
            "{message}"
        );
        assert!(message.ends_with(": try later"), "{message}");
        assert_eq!(retry_after, None, "only 429 and 503 carry a wait: {status}");
    }
}

#[tokio::test]
async fn a_body_that_is_not_an_api_error_is_not_quoted() {
    // A gateway's page may name the hosts behind it: it goes to the log only.
    let reply = Reply {
        headers: vec![("content-type", "text/html".to_owned())],
        body: "<html>upstream 10.1.2.3:8080 refused (http://inference.internal:8080/v1)</html>"
            .to_owned(),
        ..Reply::json(502, Value::Null)
    };
    let fake = FakeProvider::start(reply).await;
    let (message, _) = retryable(fake.provider(Some(KEY)).complete(&request()).await);

    assert_eq!(message, "openai: HTTP 502 Bad Gateway");
}

#[tokio::test]
async fn client_errors_are_permanent_with_the_provider_message() {
    let cases = [
        (400, "Unsupported value: 'temperature'", "400 Bad Request"),
        (
            401,
            "Incorrect API key provided: sk-test-0123456789abcdef",
            "401 Unauthorized",
        ),
        (404, "The model `gpt-9` does not exist", "404 Not Found"),
    ];
    for (status, provider_message, status_line) in cases {
        let fake = FakeProvider::start(Reply::error(status, provider_message)).await;
        let message = permanent(fake.provider(Some(KEY)).complete(&request()).await);
        assert!(
            message.starts_with(&format!("openai: HTTP {status_line}: ")),
            "{message}"
        );
        assert!(
            !message.contains(KEY),
            "the key must never be in a message: {message}"
        );
        let kept = provider_message.replace(KEY, "<redacted>");
        assert!(message.ends_with(&kept), "{message}");
    }
}

#[tokio::test]
async fn an_answer_without_content_is_permanent() {
    let reply = json!({"choices": [{"message": {"role": "assistant", "content": null}}]});
    let fake = FakeProvider::start(Reply::json(200, reply)).await;
    let message = permanent(fake.provider(Some(KEY)).complete(&request()).await);
    assert_eq!(message, "openai: the provider returned no answer");

    let fake = FakeProvider::start(Reply::json(200, json!({"choices": []}))).await;
    let message = permanent(fake.provider(Some(KEY)).complete(&request()).await);
    assert_eq!(message, "openai: the provider returned no answer");
}

#[tokio::test]
async fn an_unreadable_success_is_retryable() {
    let reply = Reply {
        body: "<html>gateway says hi</html>".to_owned(),
        ..Reply::json(200, Value::Null)
    };
    let fake = FakeProvider::start(reply).await;
    let (message, retry_after) = retryable(fake.provider(Some(KEY)).complete(&request()).await);
    assert!(
        message.starts_with("openai: invalid response from provider: "),
        "{message}"
    );
    assert!(!message.contains("gateway says hi"), "{message}");
    assert_eq!(retry_after, None);
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("local address");
    drop(listener);
    let provider = provider(&format!("http://{address}/v1"), Some(KEY));
    let (message, retry_after) = retryable(provider.complete(&request()).await);

    assert_eq!(message, "openai: cannot connect to the provider");
    assert!(!message.contains(&address.port().to_string()), "{message}");
    assert_eq!(retry_after, None);
}

#[tokio::test]
async fn list_models_returns_the_ids_sorted() {
    let models = json!({
        "object": "list",
        "data": [
            {"id": "gpt-4o-mini", "object": "model", "owned_by": "system"},
            {"id": "gpt-3.5-turbo", "object": "model", "owned_by": "openai"},
            {"id": "o1", "object": "model", "owned_by": "system"}
        ]
    });
    let fake = FakeProvider::start(Reply::json(200, models)).await;
    let ids = fake
        .provider(Some(KEY))
        .list_models()
        .await
        .expect("models");

    assert_eq!(ids, ["gpt-3.5-turbo", "gpt-4o-mini", "o1"]);
    let received = fake.received();
    assert_eq!(received[0].method, Method::GET);
    assert_eq!(received[0].path, "/v1/models");
    assert_eq!(
        received[0]
            .headers
            .get(header::AUTHORIZATION)
            .expect("authorization"),
        &format!("Bearer {KEY}")
    );
}

#[tokio::test]
async fn list_models_tells_a_refusal_from_a_passing_failure() {
    for status in [401, 403] {
        let fake = FakeProvider::start(Reply::error(status, "Incorrect API key provided")).await;
        let error = fake
            .provider(Some("wrong-key-123456"))
            .list_models()
            .await
            .expect_err("refused");
        let ModelListError::Refused {
            status: refused,
            message,
        } = error
        else {
            panic!("expected a refusal, got {error:?}");
        };
        assert_eq!(refused.as_u16(), status);
        assert!(
            message.starts_with(&format!("openai: HTTP {status} ")),
            "{message}"
        );
        assert!(
            message.ends_with(": Incorrect API key provided"),
            "{message}"
        );
    }

    for reply in [
        Reply::error(429, "slow down").with_header("retry-after", "2"),
        Reply::error(500, "boom"),
        Reply::json(200, json!({"object": "list"})),
    ] {
        let fake = FakeProvider::start(reply).await;
        let error = fake
            .provider(Some(KEY))
            .list_models()
            .await
            .expect_err("not a list");
        assert!(
            matches!(&error, ModelListError::Unavailable { message } if message.starts_with("openai: ")),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn a_trailing_slash_in_the_base_url_is_tolerated() {
    let fake = FakeProvider::start(Reply::json(200, answer("ok"))).await;
    let provider = provider(&format!("{}/", fake.base_url), None);
    assert_eq!(provider.base_url(), fake.base_url);
    assert_eq!(provider.name(), "openai");

    provider.complete(&request()).await.expect("completion");
    assert_eq!(fake.received()[0].path, "/v1/chat/completions");
}

#[test]
fn a_bad_base_url_is_refused_and_a_config_never_shows_its_key() {
    let config = OpenAiConfig {
        name: "openai".to_owned(),
        base_url: "localhost:11434/v1".to_owned(),
        api_key: Some(KEY.to_owned()),
    };
    assert!(!format!("{config:?}").contains(KEY));
    let error = OpenAiProvider::new(config.clone()).expect_err("no scheme");
    assert!(error.to_string().contains("base URL"), "{error:#}");

    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: "https://api.example.test/v1".to_owned(),
        ..config
    })
    .expect("provider");
    assert!(!format!("{provider:?}").contains(KEY));
}

/// A request whose prompt tells the shared fake provider what to send.
fn asking(prompt: &str) -> CompletionRequest {
    CompletionRequest {
        prompt: prompt.to_owned(),
        system: None,
        ..request()
    }
}

/// A call that must end although the fake's body may not.
async fn within_deadline<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the call ends: the body is not read to its end")
}

#[tokio::test]
async fn an_error_body_is_read_only_up_to_its_cap() {
    let fake = crate::fake_provider::FakeProvider::start().await;
    let provider = provider(&fake.base_url, Some(KEY));
    let ten_mib = 10 * 1024 * 1024;
    for prompt in [
        format!("big-error:500:{ten_mib}"),
        "endless-error:502".to_owned(),
    ] {
        let (message, _) = retryable(within_deadline(provider.complete(&asking(&prompt))).await);
        assert!(message.starts_with("openai: HTTP 50"), "{message}");
        assert!(
            !message.contains("xxxx"),
            "a body that is no API error is logged, not quoted"
        );
        assert!(
            message.len() < 600,
            "{prompt}: the message is short: {message}"
        );
    }
    let message = permanent(
        within_deadline(provider.complete(&asking(&format!("big-error:400:{ten_mib}")))).await,
    );
    // Cut at the cap, the body is no whole API error: it is not quoted.
    assert_eq!(message, "openai: HTTP 400 Bad Request");
}

#[tokio::test]
async fn an_answer_over_its_cap_is_a_permanent_error_that_says_so() {
    let fake = crate::fake_provider::FakeProvider::start().await;
    let provider = provider(&fake.base_url, None);
    let over = format!("big-answer:{}", caps::ANSWER + 1);
    for prompt in [over.as_str(), "endless-answer"] {
        let message = permanent(within_deadline(provider.complete(&asking(prompt))).await);
        assert_eq!(
            message,
            "openai: the provider's answer is larger than 8 MiB, the most taskrunner reads",
            "{prompt}"
        );
    }

    // A large answer within the cap is read whole (the fake answers the prompt upper-cased).
    let long = "a".repeat(1024 * 1024);
    let completion = within_deadline(provider.complete(&asking(&long)))
        .await
        .expect("a large answer");
    assert_eq!(completion.text, long.to_uppercase());
}

#[tokio::test]
async fn a_model_list_over_its_cap_is_a_failure_that_may_pass() {
    let fake = crate::fake_provider::FakeProvider::start().await;
    let names: Vec<String> = (0..60_000).map(|i| format!("model-{i:014}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    fake.set_models(&names);
    let error = within_deadline(provider(&fake.base_url, None).list_models())
        .await
        .expect_err("too long a list");
    assert_eq!(
        error,
        ModelListError::Unavailable {
            message:
                "openai: the provider's answer is larger than 1 MiB, the most taskrunner reads"
                    .to_owned()
        }
    );

    fake.set_models(&names[..100]);
    let listed = provider(&fake.base_url, None)
        .list_models()
        .await
        .expect("a list within the cap");
    assert_eq!(listed.len(), 100);
}
