//! Streamed answers: providers that stream, the worker passing text on, the
//! `taskOutput` subscription and `Task.partialResult`.

mod provider;
