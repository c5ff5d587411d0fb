//! Whole requests: documents over POST and GET, and what no client should
//! send (bad JSON and UTF-8, wrong content types and methods, huge bodies).

use std::fmt::Write as _;

use axum::body::Body;
use axum::http::{Method, Request, header};
use serde_json::{Value, json};

use super::generator::{Case, Generator, Track};
use super::values::Kind;

impl Generator {
    pub(super) fn post(&mut self, body: impl Into<Body>) -> Request<Body> {
        Request::post("/graphql")
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .expect("a request")
    }

    pub(super) fn get(
        &mut self,
        query: &str,
        variables: Option<&Value>,
        operation: Option<&str>,
    ) -> Request<Body> {
        let mut uri = format!("/graphql?query={}", percent_encode(query.as_bytes()));
        if let Some(variables) = variables {
            let _ = write!(
                uri,
                "&variables={}",
                percent_encode(variables.to_string().as_bytes())
            );
        }
        if let Some(operation) = operation {
            let _ = write!(
                uri,
                "&operationName={}",
                percent_encode(operation.as_bytes())
            );
        }
        match Request::get(uri).body(Body::empty()) {
            Ok(request) => request,
            // Over the longest URI a request line may carry (64 KiB): no HTTP
            // server would pass it on, so POST the same request instead.
            Err(_) => {
                let body = Self::graphql_body(query, variables.unwrap_or(&Value::Null), operation);
                self.post(body)
            }
        }
    }

    pub(super) fn graphql_body(query: &str, variables: &Value, operation: Option<&str>) -> String {
        let mut body = json!({ "query": query });
        if variables.as_object().is_some_and(|map| !map.is_empty()) {
            body["variables"] = variables.clone();
        }
        if let Some(operation) = operation {
            body["operationName"] = json!(operation);
        }
        body.to_string()
    }

    pub(super) fn document_case(&mut self, kind: &'static str, over_get: bool) -> Case {
        let (query, variables, track) = self.random_document();
        let operation = match self.below(10) {
            0 if self.messy || query.starts_with("query Read") => Some("Read"),
            1 if self.messy || query.starts_with("mutation Change") => Some("Change"),
            2 if self.messy => Some("Missing"),
            _ => None,
        };
        let request = if over_get {
            self.get(&query, Some(&variables), operation)
        } else {
            let body = Self::graphql_body(&query, &variables, operation);
            self.post(body)
        };
        Case {
            kind,
            request,
            track,
        }
    }

    /// A lone createTask or deleteTask, whose success the test records.
    pub(super) fn tracked_mutation(&mut self) -> Case {
        let alias = format!("m{}", self.below(1_000));
        let (field, track) = if self.chance(0.6) {
            let input = self.argument(Kind::CreateInput);
            (
                format!("{alias}: createTask(input: {input}) {{ id status }}"),
                Track::Create(alias),
            )
        } else {
            let id = if self.writable.is_empty() {
                1_000_000_000_000
            } else {
                self.pick(&self.writable.clone())
            };
            (
                format!("{alias}: deleteTask(id: \"{id}\")"),
                Track::Delete(alias),
            )
        };
        let (query, variables) = self.finish("mutation", &format!("{{ {field} }}"));
        let request = if self.chance(0.1) {
            // Over GET it must be refused, and change nothing.
            self.get(&query, Some(&variables), None)
        } else {
            self.post(Self::graphql_body(&query, &variables, None))
        };
        Case {
            kind: "tracked mutation",
            request,
            track,
        }
    }

    pub(super) fn deep(&mut self) -> Case {
        let n = if self.chance(0.1) {
            self.pick(&[1_000, 20_000])
        } else {
            self.pick(&[16, 40, 100])
        };
        let query = match self.below(5) {
            0 => {
                let mut selection = String::from("name");
                for _ in 0..n.min(2_000) {
                    selection = format!("name ofType {{ {selection} }}");
                }
                format!("{{ __schema {{ types {{ {selection} }} }} }}")
            }
            1 => format!(
                "{{ {} __typename {} }}",
                "... on Query {".repeat(n),
                "}".repeat(n)
            ),
            2 => format!("{}{}", "{ a ".repeat(n), "}".repeat(n)),
            3 => format!(
                "{{ task(id: {}1{}) {{ id }} }}",
                "[".repeat(n),
                "]".repeat(n)
            ),
            4 if self.chance(0.5) => {
                // Directives heaped on one field, rather than nesting.
                format!("{{ __typename {} }}", "@skip(if: false) ".repeat(n))
            }
            _ => format!(
                "{{ tasks(filter: {}) {{ totalCount }} }}",
                "{ status: ".repeat(n) + "PENDING" + &" }".repeat(n)
            ),
        };
        let request = self.post(json!({ "query": query }).to_string());
        Case {
            kind: "deep nesting",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn many_aliases(&mut self) -> Case {
        let n = if self.chance(0.1) {
            self.pick(&[2_000, 3_000, 6_000])
        } else {
            self.pick(&[10, 100, 500])
        };
        let id = self.readable.first().copied().unwrap_or(1);
        let field = match self.below(5) {
            0 => "tasks(first: 1) { totalCount }".to_owned(),
            1 => format!("task(id: \"{id}\") {{ id status }}"),
            2 => "models { name }".to_owned(),
            3 => "__typename".to_owned(),
            _ => "taskStats { pending }".to_owned(),
        };
        let same_name = self.chance(0.2);
        let fields: String = (0..n)
            .map(|i| {
                if same_name {
                    format!("a: {field} ")
                } else {
                    format!("a{i}: {field} ")
                }
            })
            .collect();
        let request = self.post(json!({ "query": format!("{{ {fields}}}") }).to_string());
        Case {
            kind: "many aliases",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn fragments(&mut self) -> Case {
        let query = match self.below(6) {
            0 => "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }".to_owned(),
            1 => "{ ...A } fragment A on Query { models { name } ...A }".to_owned(),
            2 => {
                let n = self.pick(&[10, 20, 30, 64]);
                let mut text = String::from("{ ...F0 }\n");
                for i in 0..n {
                    let _ = writeln!(
                        text,
                        "fragment F{i} on Query {{ ...F{n} ...F{n} models {{ name }} }}",
                        n = i + 1
                    );
                }
                let _ = write!(text, "fragment F{n} on Query {{ taskStats {{ pending }} }}");
                text
            }
            3 => {
                let spreads = "...T ".repeat(if self.chance(0.1) {
                    20_000
                } else {
                    self.pick(&[10, 1_000])
                });
                format!(
                    "{{ tasks(first: 100) {{ nodes {{ {spreads} }} }} }} fragment T on Task {{ id prompt status }}"
                )
            }
            4 => "{ tasks { nodes { ...T } } } fragment T on Query { models { name } }".to_owned(),
            _ => {
                let n = self.pick(&[100, 2_000]);
                let mut text = String::from("{ ...F0 }\n");
                for i in 0..n {
                    let _ = writeln!(text, "fragment F{i} on Query {{ ...F{} }}", i + 1);
                }
                let _ = write!(text, "fragment F{n} on Query {{ __typename }}");
                text
            }
        };
        let request = self.post(json!({ "query": query }).to_string());
        Case {
            kind: "fragments",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn many_operations(&mut self) -> Case {
        let n = if self.chance(0.01) {
            1_000
        } else {
            self.pick(&[2, 3, 10, 20])
        };
        let named = self.chance(0.7);
        let mut query = String::new();
        for i in 0..n {
            let name = if named {
                format!("Op{}", i % 7)
            } else {
                String::new()
            };
            let kind = if self.chance(0.2) {
                "mutation"
            } else {
                "query"
            };
            let body = if kind == "mutation" {
                "{ cancelTask(id: \"1000000000001\") { id } }".to_owned()
            } else {
                format!("{{ {} }}", self.query_field())
            };
            let _ = writeln!(query, "{kind} {name} {body}");
        }
        let mut body = json!({ "query": query });
        match self.below(4) {
            0 => {}
            1 => body["operationName"] = json!("Op3"),
            2 => body["operationName"] = json!("Nope"),
            _ => body["operationName"] = json!(null),
        }
        let request = if self.chance(0.2) {
            self.get(&query, None, Some("Op1"))
        } else {
            self.post(body.to_string())
        };
        Case {
            kind: "many operations",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn bad_json(&mut self) -> Case {
        let body: String = match self.below(16) {
            0 => String::new(),
            1 => "{".to_owned(),
            2 => "{\"query\": \"{ models { name } }\"".to_owned(),
            3 => "{\"query\": 5}".to_owned(),
            4 => "[]".to_owned(),
            5 => "null".to_owned(),
            6 => "{\"query\": \"{ models { name } }\", \"variables\": \"x\"}".to_owned(),
            7 => "{\"query\": \"{ models { name } }\", \"variables\": [1]}".to_owned(),
            8 => "{\"query\": \"{ models { name } }\", \"operationName\": 5}".to_owned(),
            9 => {
                "[{\"query\": \"{ models { name } }\"}, {\"query\": \"{ taskStats { pending } }\"}]"
                    .to_owned()
            }
            10 => format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
            11 => "{\"query\": \"\\ud800\"}".to_owned(),
            12 => "{\"query\": \"{ models { name } }\"} trailing".to_owned(),
            13 => "{\"query\": \"{ models { name } }\", \"variables\": {\"n\": 1e999}}".to_owned(),
            14 => "{\"query\": \"{ models { name } }\", \"query\": \"{ taskStats { pending } }\"}"
                .to_owned(),
            _ => "{\"extensions\": {\"persistedQuery\": {\"version\": 1, \"sha256Hash\": \"00\"}}}"
                .to_owned(),
        };
        let request = self.post(body);
        Case {
            kind: "bad JSON",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn bad_utf8(&mut self) -> Case {
        let mut body = match self.below(3) {
            0 => b"{\"query\": \"{ task(id: \\\"".to_vec(),
            1 => Vec::new(),
            _ => b"{\"query\": \"{ models { name } }\", \"variables\": {\"x\": \"".to_vec(),
        };
        for _ in 0..=self.below(64) {
            body.push(self.pick(&[0xff, 0xfe, 0xc0, 0x80, 0xed, 0xa0, 0x00, 0xf4, 0x90]));
        }
        if self.chance(0.5) {
            body.extend_from_slice(b"\") { id } }\"}");
        }
        let request = self.post(body);
        Case {
            kind: "bad UTF-8",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn wrong_content_type(&mut self) -> Case {
        let (query, variables, track) = self.random_document();
        let json_body = Self::graphql_body(&query, &variables, None);
        let (content_type, body): (&str, Vec<u8>) = match self.below(8) {
            0 => ("text/plain", json_body.into_bytes()),
            1 => ("application/x-www-form-urlencoded", format!("query={}", percent_encode(query.as_bytes())).into_bytes()),
            2 => ("multipart/form-data", json_body.into_bytes()),
            3 => (
                "multipart/form-data; boundary=XyZ",
                b"--XyZ\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{\"query\": \"{ models { name } }\"}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{\"0\": [\"variables.file\"]}\r\n--XyZ--\r\n".to_vec(),
            ),
            4 => ("application/graphql", query.into_bytes()),
            5 => ("application/json; charset=latin1", json_body.into_bytes()),
            6 => ("\u{7f}garbage/;;;", json_body.into_bytes()),
            _ => ("", json_body.into_bytes()),
        };
        let mut builder = Request::post("/graphql");
        if !content_type.is_empty() {
            builder = builder.header(
                header::CONTENT_TYPE,
                axum::http::HeaderValue::from_bytes(content_type.as_bytes())
                    .unwrap_or(axum::http::HeaderValue::from_static("x/y")),
            );
        }
        let request = builder.body(Body::from(body)).expect("a request");
        Case {
            kind: "wrong content type",
            request,
            track,
        }
    }

    pub(super) fn odd_method_or_path(&mut self) -> Case {
        let request = match self.below(10) {
            0 => Request::builder()
                .method(Method::PUT)
                .uri("/graphql")
                .body(Body::from("{}"))
                .expect("request"),
            1 => Request::builder()
                .method(Method::DELETE)
                .uri("/graphql")
                .body(Body::empty())
                .expect("request"),
            2 => Request::builder()
                .method(Method::PATCH)
                .uri("/graphql")
                .body(Body::empty())
                .expect("request"),
            3 => Request::head("/graphql")
                .body(Body::empty())
                .expect("request"),
            4 => Request::get("/graphql")
                .body(Body::empty())
                .expect("request"),
            5 => Request::get("/graphql?query=%ZZ")
                .body(Body::empty())
                .unwrap_or_else(|_| {
                    Request::get("/graphql?query=%25")
                        .body(Body::empty())
                        .expect("request")
                }),
            6 => Request::get("/graphql?query=%7Bmodels%7Bname%7D%7D&variables=notjson")
                .body(Body::empty())
                .expect("request"),
            7 => Request::get(
                "/graphql?query=%7Bmodels%7Bname%7D%7D&query=%7Bnope%7D&extensions=%7B%7D",
            )
            .body(Body::empty())
            .expect("request"),
            8 => Request::get(self.pick(&[
                "/nope",
                "/graphql/",
                "/GRAPHQL",
                "/healthz",
                "/readyz",
                "/graphiql",
                "/%00",
                "/..%2f..%2fetc",
            ]))
            .body(Body::empty())
            .expect("request"),
            _ => Request::get(format!(
                "/graphql?query={}",
                "%7B".repeat(self.below(5_000) + 1)
            ))
            .body(Body::empty())
            .expect("request"),
        };
        Case {
            kind: "odd method or path",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn huge_body(&mut self) -> Case {
        let over = taskrunner::http::MAX_BODY_BYTES + 1 + self.below(1024);
        let body = match self.below(3) {
            0 => json!({ "query": format!("{{ task(id: \"{}\") {{ id }} }}", "9".repeat(over)) })
                .to_string(),
            1 => "x".repeat(over),
            _ => {
                // Just under the limit: parsed, then refused for what it says.
                let prompt = "z".repeat(taskrunner::http::MAX_BODY_BYTES - 300);
                json!({ "query": "mutation($p: String!) { createTask(input: { prompt: $p, model: \"m\" }) { id } }", "variables": { "p": prompt } }).to_string()
            }
        };
        let request = self.post(body);
        Case {
            kind: "huge body",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn wrong_variables(&mut self) -> Case {
        let (query, variables) = match self.below(8) {
            0 => ("query($id: ID!) { task(id: $id) { id } }", json!({})),
            1 => (
                "query($id: ID!) { task(id: $id) { id } }",
                json!({ "id": null }),
            ),
            2 => (
                "query($id: ID!) { task(id: $id) { id } }",
                json!({ "id": [1] }),
            ),
            3 => (
                "query($n: Int) { tasks(first: $n) { totalCount } }",
                json!({ "n": "ten" }),
            ),
            4 => (
                "query($n: Int) { tasks(first: $n) { totalCount } }",
                json!({ "n": 1e300 }),
            ),
            5 => (
                "query($f: TaskFilter) { tasks(filter: $f) { totalCount } }",
                json!({ "f": { "status": ["PENDING", "nope"], "minPriority": -1 } }),
            ),
            6 => (
                "query($n: Int) { tasks(first: $id) { totalCount } }",
                json!({ "n": 1 }),
            ),
            _ => (
                "query($n: Unknown) { tasks { totalCount } }",
                json!({ "n": 1 }),
            ),
        };
        let request = self.post(json!({ "query": query, "variables": variables }).to_string());
        Case {
            kind: "wrong variables",
            request,
            track: Track::Nothing,
        }
    }

    pub(super) fn odd_headers(&mut self) -> Case {
        let (query, variables, track) = self.random_document();
        let body = Self::graphql_body(&query, &variables, None);
        let request_id: Vec<u8> = match self.below(4) {
            0 => vec![b'a'; 8_192],
            1 => b"\xff\xfe\x80 id".to_vec(),
            2 => b"id with spaces and \"quotes\"".to_vec(),
            _ => Vec::new(),
        };
        let mut builder =
            Request::post("/graphql").header(header::CONTENT_TYPE, "application/json");
        if let Ok(value) = axum::http::HeaderValue::from_bytes(&request_id) {
            builder = builder.header("x-request-id", value);
        }
        if self.chance(0.5) {
            builder = builder.header(
                header::ACCEPT,
                self.pick(&[
                    "text/html",
                    "application/graphql-response+json",
                    "*/*;q=x",
                    "\u{0}",
                ])
                .replace('\u{0}', "x"),
            );
        }
        let request = builder.body(Body::from(body)).expect("a request");
        Case {
            kind: "odd headers",
            request,
            track,
        }
    }
}

/// Every byte but the unreserved ones as `%XX`: always a valid URI.
pub(super) fn percent_encode(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 3);
    for &byte in bytes {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            text.push(char::from(byte));
        } else {
            let _ = write!(text, "%{byte:02X}");
        }
    }
    text
}
