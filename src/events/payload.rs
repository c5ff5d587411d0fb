//! The text of a change notification: `c12,u13,d14`, one letter for the
//! kind of change and the task id, comma-separated, in the order the changes
//! committed. A payload stays under PostgreSQL's limit of 8,000 bytes, so a
//! large batch is several payloads sent by one statement.

use crate::events::TaskEventType;

/// The most bytes one payload holds (PostgreSQL refuses 8,000 or more).
pub const MAX_PAYLOAD_BYTES: usize = 7_900;

fn letter(kind: TaskEventType) -> char {
    match kind {
        TaskEventType::Created => 'c',
        TaskEventType::Updated => 'u',
        TaskEventType::Deleted => 'd',
    }
}

/// Packs changes into as few payloads as fit.
pub fn encode(changes: &[(TaskEventType, i64)]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::new();
    for &(kind, id) in changes {
        let token = format!("{}{id}", letter(kind));
        if !current.is_empty() && current.len() + 1 + token.len() > MAX_PAYLOAD_BYTES {
            payloads.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(',');
        }
        current.push_str(&token);
    }
    if !current.is_empty() {
        payloads.push(current);
    }
    payloads
}

/// Reads a payload; tokens that do not parse (another program's NOTIFY on the
/// channel) are skipped.
pub fn decode(payload: &str, into: &mut Vec<(TaskEventType, i64)>) {
    for token in payload.split(',') {
        let mut chars = token.chars();
        let kind = match chars.next() {
            Some('c') => TaskEventType::Created,
            Some('u') => TaskEventType::Updated,
            Some('d') => TaskEventType::Deleted,
            _ => continue,
        };
        if let Ok(id) = chars.as_str().parse() {
            into.push((kind, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_order_and_splits_under_the_limit() {
        let changes: Vec<_> = (0..5_000_i64)
            .map(|i| {
                let kind = match i % 3 {
                    0 => TaskEventType::Created,
                    1 => TaskEventType::Updated,
                    _ => TaskEventType::Deleted,
                };
                (kind, i64::MAX - i)
            })
            .collect();
        let payloads = encode(&changes);
        assert!(payloads.len() > 1);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD_BYTES));
        let mut decoded = Vec::new();
        for payload in &payloads {
            decode(payload, &mut decoded);
        }
        assert_eq!(decoded, changes);
    }

    #[test]
    fn foreign_tokens_are_skipped() {
        let mut decoded = Vec::new();
        decode("hello,u7,x9,d,c-3", &mut decoded);
        assert_eq!(
            decoded,
            vec![(TaskEventType::Updated, 7), (TaskEventType::Created, -3)]
        );
    }
}
