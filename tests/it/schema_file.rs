//! `schema.graphql` must be exactly what `taskrunner schema` prints.

#[test]
fn schema_graphql_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    let current = taskrunner::graphql::sdl();
    assert!(
        checked_in == current,
        "schema.graphql is out of date with the code.\n\
         Regenerate it with:  cargo run -- schema > schema.graphql"
    );
}
