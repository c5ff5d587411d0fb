//! The OpenAI-compatible provider asking for streams, against the fake
//! provider over real HTTP: text passed on in pieces as it arrives, the
//! answer their concatenation, usage from the last chunk, servers that do
//! not stream, and streams that end badly.

use std::time::{Duration, Instant};

use taskrunner::providers::openai::{OpenAiConfig, OpenAiProvider};
use taskrunner::providers::{Completion, CompletionRequest, FailureKind, ProviderError};

use crate::fake_provider::FakeProvider;

fn provider(fake: &FakeProvider) -> OpenAiProvider {
    OpenAiProvider::new(OpenAiConfig {
        name: "fake".to_owned(),
        base_url: fake.base_url.clone(),
        api_key: None,
    })
    .expect("provider")
}

fn asking(prompt: &str) -> CompletionRequest {
    CompletionRequest {
        model: "fake-model".to_owned(),
        prompt: prompt.to_owned(),
        system: None,
        temperature: None,
        max_tokens: None,
    }
}

/// The pieces passed on, each with when it came, and the outcome.
async fn stream(
    fake: &FakeProvider,
    prompt: &str,
) -> (Vec<(String, Instant)>, Result<Completion, ProviderError>) {
    let mut pieces = Vec::new();
    let provider = provider(fake);
    let request = asking(prompt);
    let mut on_text = |text: &str| pieces.push((text.to_owned(), Instant::now()));
    let call = provider.stream(&request, &mut on_text);
    let outcome = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the call ends within 30 s");
    (pieces, outcome)
}

fn texts(pieces: &[(String, Instant)]) -> Vec<&str> {
    pieces.iter().map(|(text, _)| text.as_str()).collect()
}

#[tokio::test]
async fn a_streamed_answer_comes_in_pieces_as_written_and_is_their_concatenation() {
    let fake = FakeProvider::start().await;
    let (pieces, outcome) = stream(&fake, "stream-slow:150:one twö 🙂 four").await;
    let finished = Instant::now();
    let completion = outcome.expect("an answer");

    assert_eq!(texts(&pieces), ["one ", "twö ", "🙂 ", "four"]);
    assert_eq!(completion.text, texts(&pieces).concat());
    assert_eq!(
        (completion.prompt_tokens, completion.completion_tokens),
        (Some(11), Some(7)),
        "usage from the stream's last chunk"
    );
    // The first piece was passed on while the provider was still writing
    // (three more words, 150 ms apart), not once the answer was whole.
    let first = pieces[0].1;
    assert!(
        finished - first >= Duration::from_millis(300),
        "the first piece came {:?} before the end",
        finished - first
    );
    let calls = fake.calls();
    assert!(calls[0].streamed, "asked for a stream with usage");
}

#[tokio::test]
async fn a_server_that_answers_one_body_gives_one_piece() {
    let fake = FakeProvider::start().await;
    let (pieces, outcome) = stream(&fake, "no-stream:hello there").await;
    let completion = outcome.expect("an answer");
    assert_eq!(texts(&pieces), ["hello there"]);
    assert_eq!(completion.text, "hello there");
    assert_eq!(completion.completion_tokens, Some(7));
}

#[tokio::test]
async fn a_stream_that_ends_before_the_answer_is_a_failure_that_may_pass() {
    let fake = FakeProvider::start().await;
    let cases = [
        (
            "stream-cut:2:a b c d",
            "the answer's stream ended before the answer did",
        ),
        (
            "stream-break:2:a b c d",
            "fake: the connection broke while the answer was read",
        ),
        (
            "stream-error:2:a b c d",
            "fake: the provider failed mid-answer: fake provider failed mid-answer",
        ),
    ];
    for (prompt, expected) in cases {
        let (pieces, outcome) = stream(&fake, prompt).await;
        assert_eq!(
            texts(&pieces),
            ["a ", "b "],
            "{prompt}: text before the end is passed on"
        );
        match outcome {
            Err(ProviderError::Retryable {
                message,
                retry_after: None,
                ..
            }) => assert!(message.contains(expected), "{prompt}: {message}"),
            other => panic!("{prompt}: expected a failure that may pass, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn refusals_are_classified_as_before_when_asking_for_a_stream() {
    let fake = FakeProvider::start().await;
    let (pieces, outcome) = stream(&fake, "status:429:retry-after:3").await;
    assert!(pieces.is_empty());
    assert_eq!(
        outcome,
        Err(ProviderError::Retryable {
            message: "fake: HTTP 429 Too Many Requests: fake provider says 429".to_owned(),
            retry_after: Some(Duration::from_secs(3)),
            kind: FailureKind::RateLimited,
        })
    );
    let (_, outcome) = stream(&fake, "status:400").await;
    assert!(
        matches!(outcome, Err(ProviderError::Permanent { .. })),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_event_that_never_ends_is_refused_at_the_answer_cap() {
    let fake = FakeProvider::start().await;
    let (pieces, outcome) = stream(&fake, "stream-endless").await;
    assert!(pieces.is_empty());
    assert_eq!(
        outcome,
        Err(ProviderError::Permanent {
            message: "fake: the provider's answer is larger than 8 MiB, the most taskrunner reads"
                .to_owned(),
            kind: FailureKind::InvalidResponse,
        })
    );
}

#[tokio::test]
async fn dropping_a_streamed_call_closes_the_request() {
    let fake = FakeProvider::start().await;
    let prompt = "stream-slow:200:a b c d e f g h i j";
    let provider = provider(&fake);
    let (first, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let request = asking(prompt);
    let call = tokio::spawn(async move {
        provider
            .stream(&request, &mut |text| {
                let _ = first.send(text.to_owned());
            })
            .await
    });
    let piece = tokio::time::timeout(Duration::from_secs(10), heard.recv())
        .await
        .expect("a first piece within 10 s");
    assert_eq!(piece.as_deref(), Some("a "));
    call.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake.aborted().iter().any(|aborted| aborted == prompt) {
        assert!(
            Instant::now() < deadline,
            "the fake saw the stream closed mid-answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
