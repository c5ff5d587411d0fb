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
    }
}
