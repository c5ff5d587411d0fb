//! Query depth and complexity limits: GraphiQL and full pages pass; unbounded work does not.

use serde_json::json;

use crate::harness::TestApp;

/// The introspection query GraphiQL sends on load.
const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

const FULL_PAGE: &str = "{ tasks(first: 100) { totalCount pageInfo { hasPreviousPage hasNextPage startCursor endCursor } edges { cursor node { id prompt model priority status result error attempts maxAttempts createdAt updatedAt startedAt finishedAt } } nodes { id prompt model priority status result error attempts maxAttempts createdAt updatedAt startedAt finishedAt } } }";

#[tokio::test]
async fn graphiql_introspection_and_a_full_page_are_within_limits() {
    let app = TestApp::new().await;
    let schema = app.data(INTROSPECTION, json!({})).await;
    assert_eq!(schema["__schema"]["queryType"]["name"], "Query");
    let page = app.data(FULL_PAGE, json!({})).await;
    assert_eq!(page["tasks"]["totalCount"], 0);
}

#[tokio::test]
async fn too_deep_a_query_is_refused() {
    let app = TestApp::new().await;
    let mut selection = String::from("name");
    for _ in 0..16 {
        selection = format!("name ofType {{ {selection} }}");
    }
    let query = format!("{{ __schema {{ types {{ {selection} }} }} }}");
    let response = app.gql(&query, json!({})).await;
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("nested too deep"), "{response:#}");
}

#[tokio::test]
async fn too_many_rows_at_once_is_refused() {
    let app = TestApp::new().await;
    let page = "tasks(first: 100) { nodes { id prompt model priority status result error attempts maxAttempts createdAt updatedAt startedAt finishedAt } }";
    let query = format!("{{ a: {page} b: {page} c: {page} d: {page} }}");
    let response = app.gql(&query, json!({})).await;
    let message = response["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("too complex"), "{response:#}");
}
