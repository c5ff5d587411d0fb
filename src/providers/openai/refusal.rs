//! Reading a provider's refusal: whether its status may pass, how long its
//! `Retry-After` asks us to wait, and its own explanation, cut to a size a
//! task's `error` can hold.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest `Retry-After` read from a header (a provider asking for a day
/// is not a plan). The queue's backoff caps any retry's delay lower still, at
/// its maximum (10 minutes by default): see `queue::Backoff`.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);
/// How much of an error body that is not OpenAI-shaped we keep in the message.
const MAX_BODY_EXCERPT: usize = 500;

/// Whether a refusal with this status may go away if we try again.
pub(super) fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// How long a 429 or 503 asked us to wait, from `Retry-After` in either of its
/// forms (seconds, or an HTTP date); a past date means now, and it is capped.
pub(super) fn retry_after(
    status: StatusCode,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Option<Duration> {
    if !matches!(status.as_u16(), 429 | 503) {
        return None;
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<i64>() {
        Ok(seconds) => Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&Utc) - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The provider's own explanation from an error body: OpenAI's
/// `{"error": {"message": …}}`, or the bare `{"error": "…"}` some compatible
/// servers send. Any other body (a proxy's HTML page, say) is no message for
/// the task's owner: it may name the deployment's hosts, so it goes to the
/// log only.
pub(super) fn provider_message(body: &str) -> Option<String> {
    let json = serde_json::from_str::<serde_json::Value>(body).ok()?;
    let error = json.get("error")?;
    let explained = error.get("message").unwrap_or(error).as_str()?;
    let message = excerpt(explained);
    (!message.is_empty()).then_some(message)
}

/// At most [`MAX_BODY_EXCERPT`] characters of `text`, trimmed, marked when cut.
pub(super) fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_BODY_EXCERPT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates_for_429_and_503_only() {
        let now = DateTime::parse_from_rfc3339("2025-01-01T12:00:00Z")
            .unwrap()
            .to_utc();
        let cases = [
            (429, "7", Some(7)),
            (503, " 0 ", Some(0)),
            (503, "-5", Some(0)),
            (429, "Wed, 01 Jan 2025 12:00:30 GMT", Some(30)),
            (503, "Wed, 01 Jan 2025 11:00:00 GMT", Some(0)),
            (429, "86400", Some(3600)),
            (429, "Thu, 02 Jan 2025 12:00:00 GMT", Some(3600)),
            (429, "soon", None),
            (500, "7", None),
        ];
        for (status, value, seconds) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().unwrap());
            let status = StatusCode::from_u16(status).unwrap();
            let expected = seconds.map(Duration::from_secs);
            assert_eq!(
                retry_after(status, &headers, now),
                expected,
                "{status} {value}"
            );
        }
        assert_eq!(
            retry_after(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), now),
            None
        );
    }

    #[test]
    fn statuses_are_classified() {
        let retryable = |status| is_retryable(StatusCode::from_u16(status).unwrap());
        assert!(
            [408, 409, 429, 500, 502, 503, 504, 599]
                .into_iter()
                .all(retryable)
        );
        assert!(
            ![302, 400, 401, 403, 404, 413, 422]
                .into_iter()
                .any(retryable)
        );
    }

    #[test]
    fn provider_messages_are_found_or_cut() {
        let openai = r#"{"error": {"message": "Rate limit reached", "type": "requests"}}"#;
        assert_eq!(
            provider_message(openai).as_deref(),
            Some("Rate limit reached")
        );
        let bare = r#"{"error": "model not found"}"#;
        assert_eq!(provider_message(bare).as_deref(), Some("model not found"));
        let html = " <h1>Bad Gateway</h1>\n";
        assert_eq!(provider_message(html), None);
        assert_eq!(provider_message("  "), None);
        let long = serde_json::json!({ "error": "é".repeat(MAX_BODY_EXCERPT + 10) }).to_string();
        let cut = provider_message(&long).unwrap();
        assert_eq!(cut.chars().count(), MAX_BODY_EXCERPT + 1);
        assert!(cut.ends_with('…'));
    }
}
