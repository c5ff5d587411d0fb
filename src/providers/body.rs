//! Reading a provider's response body without trusting its size.
//!
//! A provider (or a proxy in front of it) may send any amount: a 10 MiB HTML
//! error page, or a body that never ends. Bodies are read chunk by chunk and
//! reading stops at a cap, so one bad answer costs a bounded amount of memory.

/// What each kind of body is allowed to weigh.
pub mod caps {
    /// An error body: only its first few hundred characters reach a message,
    /// so this is ample for any explanation a provider gives.
    pub const ERROR_BODY: usize = 64 * 1024;
    /// A model list (`GET /models`). Larger than an error body: aggregators
    /// list hundreds of models, each with a description.
    pub const MODEL_LIST: usize = 1024 * 1024;
    /// A completion's answer. A million tokens of text is about 4 MiB, and
    /// JSON escaping adds some; anything larger is not an answer we can store.
    pub const ANSWER: usize = 8 * 1024 * 1024;
}

/// A body, or as much of it as the cap allowed.
#[derive(Debug)]
pub struct CappedBody {
    /// The bytes read, at most the cap.
    pub bytes: Vec<u8>,
    /// Whether the body went on beyond the cap (the rest was not read).
    pub cut: bool,
}

impl CappedBody {
    /// The body as text; bytes that are not UTF-8 (a cut can split a character) are replaced.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.bytes)
    }
}

/// Reads at most `cap` bytes of `response`'s body, one chunk at a time, and
/// stops as soon as the cap is passed. The rest is never read: dropping the
/// response then closes the connection instead of draining it.
pub async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<CappedBody, reqwest::Error> {
    let announced = response
        .content_length()
        .and_then(|length| usize::try_from(length).ok());
    let mut bytes = Vec::with_capacity(announced.unwrap_or(0).min(cap));
    while let Some(chunk) = response.chunk().await? {
        let room = cap - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(CappedBody { bytes, cut: true });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(CappedBody { bytes, cut: false })
}

/// A size as a person reads it: `64 KiB`, `8 MiB`.
pub fn size_text(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size_text(caps::ERROR_BODY), "64 KiB");
        assert_eq!(size_text(caps::ANSWER), "8 MiB");
        assert_eq!(size_text(1500), "1500 bytes");
    }

    #[tokio::test]
    async fn a_body_is_cut_at_the_cap_and_a_short_one_is_whole() {
        let response = |body: &'static str| {
            reqwest::Response::from(
                axum::http::Response::builder()
                    .body(body)
                    .expect("a response"),
            )
        };
        let mut long = response("0123456789");
        let read = read_capped(&mut long, 4).await.expect("read");
        assert_eq!((read.bytes.as_slice(), read.cut), (&b"0123"[..], true));

        let mut exact = response("0123");
        let read = read_capped(&mut exact, 4).await.expect("read");
        assert_eq!((read.text().as_ref(), read.cut), ("0123", false));
    }
}
