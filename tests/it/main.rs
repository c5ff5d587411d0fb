//! Integration tests, against a real PostgreSQL (see `harness`).

mod binary;
mod fake_provider;
mod harness;
mod http;
mod limits;
mod migrations;
mod pagination;
mod providers_openai;
mod providers_routing;
mod queue;
mod queue_guarantees;
mod schema_file;
mod tasks_api;
