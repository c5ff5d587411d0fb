//! Integration tests, against a real PostgreSQL (see `harness`).

mod binary;
mod harness;
mod http;
mod limits;
mod migrations;
mod pagination;
mod schema_file;
mod tasks_api;
