// @generated automatically by Diesel CLI.

pub mod sql_types {
    #[derive(diesel::query_builder::QueryId, Clone, diesel::sql_types::SqlType)]
    #[diesel(postgres_type(name = "task_status"))]
    pub struct TaskStatus;
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::TaskStatus;

    tasks (id) {
        id -> Int8,
        prompt -> Text,
        model -> Text,
        priority -> Int2,
        status -> TaskStatus,
        result -> Nullable<Text>,
        error -> Nullable<Text>,
        attempts -> Int4,
        max_attempts -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        run_at -> Timestamptz,
        system_prompt -> Nullable<Text>,
        temperature -> Nullable<Float8>,
        max_tokens -> Nullable<Int4>,
        timeout_seconds -> Nullable<Int4>,
        prompt_tokens -> Nullable<Int4>,
        completion_tokens -> Nullable<Int4>,
        worker_id -> Nullable<Text>,
        cancel_requested -> Bool,
        lost_attempts -> Int4,
        tenant -> Text,
        idempotency_key -> Nullable<Text>,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Int8,
        tenant -> Text,
        role -> Text,
        name -> Nullable<Text>,
        prefix -> Text,
        secret_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    task_partial_results (task_id) {
        task_id -> Int8,
        attempt -> Int4,
        text -> Text,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::TaskStatus;

    task_status_counts (tenant, status) {
        status -> TaskStatus,
        n -> Int8,
        tenant -> Text,
    }
}

diesel::table! {
    tenants (name) {
        name -> Text,
        max_pending -> Nullable<Int4>,
        creates_per_minute -> Nullable<Int4>,
        creates_due_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    workers (id) {
        id -> Text,
        started_at -> Timestamptz,
        heartbeat_at -> Timestamptz,
        lease_expires_at -> Timestamptz,
    }
}

diesel::joinable!(api_tokens -> tenants (tenant));
diesel::joinable!(task_partial_results -> tasks (task_id));

diesel::allow_tables_to_appear_in_same_query!(
    api_tokens,
    task_partial_results,
    task_status_counts,
    tasks,
    tenants,
    workers,
);
