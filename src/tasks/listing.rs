//! What a client may ask of the task list: a filter, an ordering, and a keyset
//! page (opaque cursors that name a position in the ordering, never an offset).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use crate::tasks::validation::{
    InvalidField, PRIORITY_RANGE, check_instant, check_tenant_name, is_writable_instant,
};
use crate::tasks::{Task, TaskStatus};

/// The page size used when a client gives neither `first` nor `last`.
pub const DEFAULT_PAGE_SIZE: i64 = 20;
/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: i64 = 100;

/// Which tasks to list. Every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub statuses: Option<Vec<TaskStatus>>,
    pub model: Option<String>,
    pub min_priority: Option<i16>,
    pub max_priority: Option<i16>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub tenant: Option<String>,
}

/// A filter as a client sends it, before validation. Every condition given
/// must hold.
#[derive(Debug, Clone, Default)]
pub struct FilterFields {
    pub status: Option<Vec<TaskStatus>>,
    pub model: Option<String>,
    pub min_priority: Option<i32>,
    pub max_priority: Option<i32>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub tenant: Option<String>,
}

impl FilterFields {
    /// Checks the filter and turns it into the one the store takes.
    pub fn into_filter(self) -> Result<TaskFilter, InvalidField> {
        Ok(TaskFilter {
            statuses: self.status,
            model: self.model.map(filter_model).transpose()?,
            min_priority: self
                .min_priority
                .map(|p| priority_bound("filter.minPriority", p))
                .transpose()?,
            max_priority: self
                .max_priority
                .map(|p| priority_bound("filter.maxPriority", p))
                .transpose()?,
            created_after: self
                .created_after
                .map(|at| check_instant("filter.createdAfter", at))
                .transpose()?,
            created_before: self
                .created_before
                .map(|at| check_instant("filter.createdBefore", at))
                .transpose()?,
            tenant: self
                .tenant
                .map(|tenant| check_tenant_name("filter.tenant", tenant))
                .transpose()?,
        })
    }
}

/// A model name to filter by. Any text may be asked for (a name no task has
/// matches nothing), except NUL, which PostgreSQL's text cannot hold: sent,
/// it would fail in the database as an internal error.
fn filter_model(model: String) -> Result<String, InvalidField> {
    if model.contains('\0') {
        return Err(InvalidField::new(
            "filter.model",
            "must not contain NUL characters",
        ));
    }
    Ok(model)
}

fn priority_bound(field: &'static str, priority: i32) -> Result<i16, InvalidField> {
    if PRIORITY_RANGE.contains(&priority) {
        i16::try_from(priority).map_err(|_| InvalidField::new(field, "is out of range"))
    } else {
        Err(InvalidField::new(
            field,
            format!("must be between 1 and 10, got {priority}"),
        ))
    }
}

impl TaskFilter {
    /// Whether `task` meets every condition, as the list's query would judge
    /// it (for subscribers, who see tasks one at a time).
    pub fn matches(&self, task: &Task) -> bool {
        self.statuses
            .as_ref()
            .is_none_or(|statuses| statuses.contains(&task.status))
            && self.model.as_ref().is_none_or(|model| *model == task.model)
            && self.min_priority.is_none_or(|min| task.priority >= min)
            && self.max_priority.is_none_or(|max| task.priority <= max)
            && self
                .created_after
                .is_none_or(|after| task.created_at > after)
            && self
                .created_before
                .is_none_or(|before| task.created_at < before)
            && self
                .tenant
                .as_ref()
                .is_none_or(|tenant| *tenant == task.tenant)
    }
}

/// The sort key of the task list. Ties are broken by id, so every ordering is total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum TaskOrderField {
    /// When the task was created.
    CreatedAt,
    /// When the task last changed.
    UpdatedAt,
    /// The task's priority (1 lowest, 10 highest).
    Priority,
}

/// Which way an ordering runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum OrderDirection {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

impl OrderDirection {
    /// The other direction.
    pub fn reversed(self) -> Self {
        match self {
            OrderDirection::Asc => OrderDirection::Desc,
            OrderDirection::Desc => OrderDirection::Asc,
        }
    }
}

/// A complete ordering of the task list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOrder {
    pub field: TaskOrderField,
    pub direction: OrderDirection,
}

impl Default for TaskOrder {
    fn default() -> Self {
        TaskOrder {
            field: TaskOrderField::CreatedAt,
            direction: OrderDirection::Desc,
        }
    }
}

/// A position in an ordering: the sort key of a task and its id.
///
/// Timestamps are kept as microseconds since the epoch (PostgreSQL's own
/// precision), so a cursor names a position exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub field: TaskOrderField,
    pub key: i64,
    pub id: i64,
}

/// Why a cursor could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("is not a cursor this API issued")]
    Malformed,
    #[error("was issued for a different ordering; start again without a cursor")]
    WrongOrdering,
}

impl Cursor {
    const VERSION: &'static str = "v1";

    /// The position of `task` in an ordering by `field`.
    pub fn of(task: &Task, field: TaskOrderField) -> Self {
        let key = match field {
            TaskOrderField::CreatedAt => task.created_at.timestamp_micros(),
            TaskOrderField::UpdatedAt => task.updated_at.timestamp_micros(),
            TaskOrderField::Priority => i64::from(task.priority),
        };
        Cursor {
            field,
            key,
            id: task.id,
        }
    }

    /// The opaque string handed to clients.
    pub fn encode(&self) -> String {
        let tag = field_tag(self.field);
        URL_SAFE_NO_PAD.encode(format!("{}:{tag}:{}:{}", Self::VERSION, self.key, self.id))
    }

    /// Reads a cursor back, checking it belongs to the ordering in use.
    pub fn decode(text: &str, expected: TaskOrderField) -> Result<Self, CursorError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CursorError::Malformed)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| CursorError::Malformed)?;
        let mut parts = text.split(':');
        let (Some(Self::VERSION), Some(tag), Some(key), Some(id), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CursorError::Malformed);
        };
        let field = [
            TaskOrderField::CreatedAt,
            TaskOrderField::UpdatedAt,
            TaskOrderField::Priority,
        ]
        .into_iter()
        .find(|field| field_tag(*field) == tag)
        .ok_or(CursorError::Malformed)?;
        let key = key.parse().map_err(|_| CursorError::Malformed)?;
        let id = id.parse().map_err(|_| CursorError::Malformed)?;
        if field != expected {
            return Err(CursorError::WrongOrdering);
        }
        Ok(Cursor { field, key, id })
    }

    /// The sort key as a timestamp (for the timestamp orderings).
    pub fn key_as_timestamp(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.key)
    }
}

fn field_tag(field: TaskOrderField) -> &'static str {
    match field {
        TaskOrderField::CreatedAt => "c",
        TaskOrderField::UpdatedAt => "u",
        TaskOrderField::Priority => "p",
    }
}

/// Which slice of an ordering to return: the `limit` rows just after `after`
/// (or from the start), or with `from_end`, the `limit` rows just before
/// `before` (or at the end). Both bounds may be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<Cursor>,
    pub before: Option<Cursor>,
    pub limit: i64,
    pub from_end: bool,
}

impl PageRequest {
    /// Checks a client's paging arguments (Relay's `first`/`after` and
    /// `last`/`before`) against `order` and the page size limits.
    pub fn from_arguments(
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
        order: TaskOrder,
    ) -> Result<PageRequest, InvalidField> {
        let (limit, from_end) = match (first, last) {
            (Some(_), Some(_)) => {
                return Err(InvalidField::new(
                    "last",
                    "give `first` or `last`, not both",
                ));
            }
            (Some(first), None) => (page_size("first", first)?, false),
            (None, Some(last)) => (page_size("last", last)?, true),
            // `before` alone pages backward from it; nothing pages forward from the start.
            (None, None) => (DEFAULT_PAGE_SIZE, before.is_some() && after.is_none()),
        };
        Ok(PageRequest {
            after: after
                .map(|text| page_cursor("after", &text, order))
                .transpose()?,
            before: before
                .map(|text| page_cursor("before", &text, order))
                .transpose()?,
            limit,
            from_end,
        })
    }
}

fn page_size(field: &'static str, n: i32) -> Result<i64, InvalidField> {
    let n = i64::from(n);
    if !(0..=MAX_PAGE_SIZE).contains(&n) {
        return Err(InvalidField::new(
            field,
            format!("must be between 0 and {MAX_PAGE_SIZE}, got {n}"),
        ));
    }
    Ok(n)
}

fn page_cursor(field: &'static str, text: &str, order: TaskOrder) -> Result<Cursor, InvalidField> {
    let cursor =
        Cursor::decode(text, order.field).map_err(|e| InvalidField::new(field, e.to_string()))?;
    // A time no task can have (forged, not issued) is refused here rather
    // than failing in the database. (A priority out of range is harmless: it
    // compares as the nearest one.)
    let in_range = match cursor.field {
        TaskOrderField::Priority => true,
        TaskOrderField::CreatedAt | TaskOrderField::UpdatedAt => {
            cursor.key_as_timestamp().is_some_and(is_writable_instant)
        }
    };
    if in_range {
        Ok(cursor)
    } else {
        Err(InvalidField::new(field, CursorError::Malformed.to_string()))
    }
}

/// One page of tasks in the requested order, and whether rows lie on either side.
#[derive(Debug, Clone)]
pub struct Page {
    pub tasks: Vec<Task>,
    pub has_previous_page: bool,
    pub has_next_page: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = Cursor {
            field: TaskOrderField::UpdatedAt,
            key: -1_234_567,
            id: 42,
        };
        let decoded = Cursor::decode(&cursor.encode(), TaskOrderField::UpdatedAt).unwrap();
        assert_eq!(decoded, cursor);
    }

    #[test]
    fn cursor_for_another_ordering_is_refused() {
        let cursor = Cursor {
            field: TaskOrderField::Priority,
            key: 5,
            id: 1,
        };
        assert_eq!(
            Cursor::decode(&cursor.encode(), TaskOrderField::CreatedAt),
            Err(CursorError::WrongOrdering)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for text in [
            "",
            "!!!",
            "djE6YzoxOjI6Mw",
            &URL_SAFE_NO_PAD.encode("v1:c:x:1"),
        ] {
            assert_eq!(
                Cursor::decode(text, TaskOrderField::CreatedAt),
                Err(CursorError::Malformed),
                "{text}"
            );
        }
    }
}
