//! The event backbone: every change to a task, whichever process made it,
//! reaches every API process within milliseconds, over PostgreSQL's
//! LISTEN/NOTIFY and nothing else.
//!
//! - `publisher`: after a change commits, its kind and task id are queued; one
//!   background statement sends everything queued since the last one as a few
//!   `pg_notify` payloads (never a NOTIFY inside the change's own transaction);
//! - `listener`: the process's one LISTEN connection, shared by every part that
//!   needs notifications;
//! - `hub`: reads the changed rows once per batch (only those someone watches)
//!   and fans them out to subscribers through bounded channels;
//! - `payload`: the compact text a notification carries.

pub mod hub;
pub mod listener;
mod payload;
mod publisher;

pub use hub::{EventHub, TaskEvent, TaskWatch, Watched};
pub use listener::{Heard, Listener};
pub use publisher::ChangePublisher;

/// The channel task changes are announced on.
pub const EVENTS_CHANNEL: &str = "taskrunner_task_events";

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum)]
pub enum TaskEventType {
    /// The task was created.
    Created,
    /// The task changed: its status (claimed, retried, finished, cancelled) or its fields.
    Updated,
    /// The task was deleted; the event carries its last state.
    Deleted,
}
