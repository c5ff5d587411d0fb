//! Integration tests, against a real PostgreSQL (see `harness`).

mod binary;
mod fake_provider;
mod harness;
mod hostile;
mod http;
mod limits;
mod migrations;
mod pagination;
mod providers_openai;
mod queue;
mod schema_file;
mod tasks_api;
