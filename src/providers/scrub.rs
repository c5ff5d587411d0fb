//! What of a provider's error a task's owner may read: the text recorded in
//! the task's `error` with any URL or network address taken out.
//!
//! The provider code already keeps what it knows to be internal (our
//! requests' URLs, connection errors, proxies' pages) for the log. This is
//! the last step before the database, for what slipped through: a provider
//! that quotes the address it was called on, or a gateway in front of it
//! that names its upstream in an API-shaped error.

/// `message` with every URL replaced by `<url>` and every IP address (with
/// or without a port) and `localhost:port` by `<address>`.
pub fn public_text(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(&scrub_word(&rest[..end]));
        rest = &rest[end..];
    }
    out
}

/// One whitespace-delimited word, scrubbed. Punctuation around an address
/// (`(http://…)`, `10.0.0.5:8080,`) is kept.
fn scrub_word(word: &str) -> String {
    if let Some(scheme_end) = word.find("://") {
        let scheme_start = word[..scheme_end]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .map_or(0, |i| i + 1);
        let tail = trailing_punctuation(&word[scheme_end..]);
        return format!("{}<url>{}", &word[..scheme_start], tail);
    }
    // `[::1]:9000` keeps its brackets; `(10.0.0.5)` loses its parentheses.
    let punctuation = |brackets: bool| {
        move |c: char| "(){}<>,;:!?'\"`.".contains(c) || (brackets && "[]".contains(c))
    };
    for brackets in [false, true] {
        let trimmed = word.trim_matches(punctuation(brackets));
        if !trimmed.is_empty() && is_address(trimmed) {
            return word.replacen(trimmed, "<address>", 1);
        }
    }
    word.to_owned()
}

/// The closing punctuation a URL inside text is followed by.
fn trailing_punctuation(url: &str) -> &str {
    let kept = url.trim_end_matches(|c: char| ")]}>,;:!?'\"`.".contains(c));
    &url[kept.len()..]
}

/// An IPv4 or IPv6 address, with or without a port, or `localhost:port`.
fn is_address(text: &str) -> bool {
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (host, Some(port))
        }
        _ => (text, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>().is_ok()
        || text.parse::<std::net::IpAddr>().is_ok()
        || (port.is_some() && host.eq_ignore_ascii_case("localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses_are_taken_out() {
        assert_eq!(
            public_text("error sending request for url (http://10.0.0.5:8080/v1/chat): refused"),
            "error sending request for url (<url>): refused"
        );
        assert_eq!(
            public_text("upstream 10.1.2.3:8443, then 192.168.0.1."),
            "upstream <address>, then <address>."
        );
        assert_eq!(
            public_text("connect to [::1]:9000 or localhost:5000 failed"),
            "connect to <address> or <address> failed"
        );
        assert_eq!(public_text("see https://example.com/docs"), "see <url>");
    }

    #[test]
    fn ordinary_words_and_times_are_kept() {
        for text in [
            "openai: HTTP 502 Bad Gateway",
            "openai: the attempt timed out after 30 s",
            "rate limited until 12:30, try version 1.2.3",
            "The model `gpt-4o` does not exist",
            "",
            "  spaced   out  ",
        ] {
            assert_eq!(public_text(text), text);
        }
    }
}
