//! `taskOutput` on a `serve --workers 0` process for a task run by a
//! separate `taskrunner worker` process.
