//! Streamed answers: the text of running attempts, passed from the worker
//! that runs them to every API process as the provider writes it.
//!
//! On the worker: providers write into the [`book`](book::OutputBook); the
//! [`writer`] sends new text with NOTIFY on [`OUTPUT_CHANNEL`] (coalesced,
//! in batches, in payloads that fit) and saves each attempt's text so far
//! about once a second in `task_partial_results`, which `Task.partialResult`
//! reads.
//!
//! In each API process: the [`hub`] hears the channel through the process's
//! listener and keeps the text of the attempts it hears of, so that a
//! `taskOutput` subscriber ([`follow`]) gets the text so far, then every
//! piece, with nothing missing or doubled (pieces carry their byte offset;
//! a gap is filled from the saved text).

pub mod book;
pub mod follow;
pub mod hub;
pub mod store;
pub mod wire;
pub mod writer;

/// The channel a worker NOTIFYs its attempts' text on.
pub const OUTPUT_CHANNEL: &str = "taskrunner_task_output";

pub use follow::AnswerChunk;
pub use hub::OutputHub;
