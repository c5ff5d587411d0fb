//! Server-sent events, as a streamed chat completion arrives: bytes in, the
//! `data` of each event out.
//!
//! Only what a completion stream uses is kept: `data:` lines (joined with a
//! newline when an event has several), dispatched at a blank line; comments
//! (`:` keep-alives) and the other fields (`event`, `id`, `retry`) are
//! skipped. Lines may end in `\n`, `\r\n` or `\r`, and a network chunk may
//! end anywhere, even inside a character or between `\r` and `\n`.
//!
//! What is held is bounded: an event (or a line) longer than the cap is an
//! error, so a stream that never sends a newline cannot grow memory.

/// Why a stream cannot be read as events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseError {
    /// One event is longer than the cap.
    TooLarge,
    /// A line is not UTF-8.
    NotText,
}

/// Turns a byte stream into events' data, one chunk at a time.
#[derive(Debug)]
pub struct SseDecoder {
    /// The current line, not yet ended.
    line: Vec<u8>,
    /// The data of the event being read, if it has any `data:` line yet.
    data: Option<String>,
    /// The last byte seen was `\r`: a `\n` right after it ends nothing.
    after_cr: bool,
    cap: usize,
}

impl SseDecoder {
    /// A decoder that refuses events (and lines) longer than `cap` bytes.
    pub fn new(cap: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            data: None,
            after_cr: false,
            cap,
        }
    }

    /// Reads `bytes` and appends the data of every event they complete to `events`.
    pub fn feed(&mut self, bytes: &[u8], events: &mut Vec<String>) -> Result<(), SseError> {
        let mut rest = bytes;
        while let Some(&first) = rest.first() {
            if self.after_cr && first == b'\n' {
                self.after_cr = false;
                rest = &rest[1..];
                continue;
            }
            self.after_cr = false;
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.take_line_part(&rest[..end])?;
                    self.after_cr = rest[end] == b'\r';
                    rest = &rest[end + 1..];
                    self.end_line(events)?;
                }
                None => {
                    self.take_line_part(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    /// The data of an event the stream ended without a blank line after, if any.
    pub fn finish(mut self) -> Result<Option<String>, SseError> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            self.end_line(&mut events)?;
        }
        Ok(events.pop().or(self.data))
    }

    fn take_line_part(&mut self, part: &[u8]) -> Result<(), SseError> {
        let held = self.line.len() + self.data.as_ref().map_or(0, String::len);
        if held + part.len() > self.cap {
            return Err(SseError::TooLarge);
        }
        self.line.extend_from_slice(part);
        Ok(())
    }

    fn end_line(&mut self, events: &mut Vec<String>) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(data);
            }
            return Ok(());
        }
        let line = String::from_utf8(line).map_err(|_| SseError::NotText)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        // An empty field name is a comment; fields other than data are not used.
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> Vec<String> {
        let mut decoder = SseDecoder::new(1024);
        let mut events = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk, &mut events).expect("valid stream");
        }
        events.extend(decoder.finish().expect("valid end"));
        events
    }

    #[test]
    fn events_end_at_blank_lines_whatever_the_line_endings() {
        let stream =
            b": keep-alive\n\ndata: one\n\nevent: x\ndata:two\r\n\r\ndata: a\rdata: b\r\rid: 7\n\n";
        let expected = ["one", "two", "a\nb"];
        assert_eq!(decode(&[stream]), expected);
        // The same bytes cut at every place give the same events.
        for cut in 0..stream.len() {
            let (left, right) = stream.split_at(cut);
            assert_eq!(decode(&[left, right]), expected, "cut at {cut}");
        }
    }

    #[test]
    fn a_character_split_between_chunks_is_whole_and_a_last_event_is_kept() {
        let text = "data: é🙂\n\ndata: tail";
        let bytes = text.as_bytes();
        let split = text.find('🙂').expect("emoji") + 1;
        assert_eq!(decode(&[&bytes[..split], &bytes[split..]]), ["é🙂", "tail"]);
    }

    #[test]
    fn a_line_without_end_is_refused_at_the_cap_and_bad_bytes_are_not_text() {
        let mut decoder = SseDecoder::new(8);
        let mut events = Vec::new();
        assert_eq!(decoder.feed(b"data: 12", &mut events), Ok(()));
        assert_eq!(
            decoder.feed(b"3", &mut events),
            Err(SseError::TooLarge),
            "nine bytes held"
        );
        let mut decoder = SseDecoder::new(64);
        assert_eq!(
            decoder.feed(b"data: \xff\n\n", &mut events),
            Err(SseError::NotText)
        );
        assert!(events.is_empty());
    }
}
