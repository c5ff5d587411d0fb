//! Argument values: valid, extreme and wrong, as literals and as variables.

use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};
use taskrunner::tasks::listing::{Cursor, TaskOrderField};

use super::generator::Generator;

/// A GraphQL value, as literal text and as a variable's JSON.
pub(super) struct Val {
    pub(super) literal: String,
    pub(super) json: Value,
}

impl Val {
    pub(super) fn new(literal: impl Into<String>, json: Value) -> Self {
        Val {
            literal: literal.into(),
            json,
        }
    }

    pub(super) fn string(text: &str) -> Self {
        Val::new(graphql_string(text), json!(text))
    }
}

/// `text` as a GraphQL string literal.
pub(super) fn graphql_string(text: &str) -> String {
    // JSON's escapes are GraphQL's, except that GraphQL wants no raw control characters either.
    serde_json::to_string(text).expect("a string serialises")
}

/// The kinds of value the schema's arguments take.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    PageSize,
    Priority,
    Attempts,
    Seconds,
    Tokens,
    Temperature,
    Prompt,
    Model,
    Text,
    Cursor,
    Id,
    WritableId,
    Instant,
    Statuses,
    OrderField,
    Direction,
    Filter,
    Order,
    CreateInput,
    UpdateInput,
}

impl Kind {
    /// The type a variable of this kind is declared with.
    pub(super) fn graphql_type(self) -> &'static str {
        match self {
            Kind::PageSize | Kind::Priority | Kind::Attempts | Kind::Seconds | Kind::Tokens => {
                "Int"
            }
            Kind::Temperature => "Float",
            Kind::Prompt | Kind::Model | Kind::Text | Kind::Cursor => "String",
            Kind::Id | Kind::WritableId => "ID!",
            Kind::Instant => "DateTime",
            Kind::Statuses => "[TaskStatus!]",
            Kind::OrderField => "TaskOrderField",
            Kind::Direction => "OrderDirection",
            Kind::Filter => "TaskFilter",
            Kind::Order => "TaskOrder",
            Kind::CreateInput => "CreateTaskInput!",
            Kind::UpdateInput => "UpdateTaskInput!",
        }
    }
}

pub(super) const STATUSES: &[&str] = &["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];

/// Strings that are odd in every way but never spell a word the leak check
/// looks for.
pub(super) const ODD_TEXTS: &[&str] = &[
    "",
    " ",
    "\u{0}",
    "a\u{0}b",
    "\u{202e}gnp.exe",
    "e\u{301}\u{301}\u{301}",
    "\u{feff}",
    "😀👩‍👩‍👧‍👦",
    "\u{10ffff}",
    "\u{fffd}",
    "\\",
    "\"",
    "'; DROP TABLE tasks; --",
    "$1",
    "%s%n%x",
    "{{}}",
    "\r\n\t",
    "null",
    "NaN",
    "-Infinity",
    "１２３",
    "١٢٣",
    "0x10",
    "1e3",
    " 1",
    "1 ",
    "+1",
    "00001",
    "gpt-4o-mini",
    "echo",
    "../../etc/passwd",
    "<script>alert(1)</script>",
];

impl Generator {
    /// A value of `kind`: usually valid, often extreme or wrong, sometimes
    /// passed as a variable.
    pub(super) fn argument(&mut self, kind: Kind) -> String {
        let value = self.value(kind, 0);
        if self.chance(0.25) {
            let name = format!("v{}", self.doc.variables.len());
            let declared = match (self.messy, self.below(20)) {
                (true, 0) => "String".to_owned(),
                (true, 1) => "Unknown".to_owned(),
                (true, 2) => format!("[{}]", kind.graphql_type()),
                (true, 3) => kind.graphql_type().trim_end_matches('!').to_owned(),
                _ => kind.graphql_type().to_owned(),
            };
            let json = match (self.messy, self.below(12)) {
                (true, 0) => None,
                (true, 1) => Some(self.wrong_json()),
                _ => Some(value.json),
            };
            self.doc.variables.push((name.clone(), declared, json));
            return format!("${name}");
        }
        value.literal
    }

    pub(super) fn value(&mut self, kind: Kind, depth: usize) -> Val {
        if self.oops(0.06) {
            return self.wrong_value();
        }
        match kind {
            Kind::PageSize => self.int(
                &[0, 1, 5, 20, 100],
                &[101, -1, i64::from(i32::MAX), i64::from(i32::MIN)],
            ),
            Kind::Priority => self.int(
                &[1, 5, 10],
                &[0, 11, -5, 32_767, 32_768, i64::from(i32::MAX)],
            ),
            Kind::Attempts => self.int(&[1, 3, 20], &[0, 21, -1, i64::from(i32::MIN)]),
            Kind::Seconds => self.int(&[1, 60, 86_400], &[0, 86_401, -1, i64::from(i32::MAX)]),
            Kind::Tokens => self.int(
                &[1, 1000, 1_000_000],
                &[0, 1_000_001, -7, i64::from(i32::MAX)],
            ),
            Kind::Temperature => self.float(),
            Kind::Prompt => self.text(true),
            Kind::Model => {
                let model = match self.below(8) {
                    0 => "m".repeat(101),
                    1 => "bad model!".to_owned(),
                    2 => self.pick(ODD_TEXTS).to_owned(),
                    3 => "a".repeat(self.below(100) + 1),
                    _ => self
                        .pick(&["echo", "gpt-4o-mini", "llama3.1:8b", "org/model-1.5"])
                        .to_owned(),
                };
                Val::string(&model)
            }
            Kind::Text => self.text(false),
            Kind::Cursor => Val::string(&self.cursor()),
            Kind::Id => self.id(false),
            Kind::WritableId => self.id(true),
            Kind::Instant if !self.messy => Val::string(self.pick(&[
                "2026-01-01T00:00:00Z",
                "2030-06-30T12:00:00.123456+02:00",
                "1970-01-01T00:00:00Z",
                "0001-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999999Z",
                "-262143-01-01T00:00:00Z",
                "-4713-11-24T00:00:00Z",
                "-0001-12-31T23:59:59Z",
                "2026-01-01T00:00:00-23:59",
            ])),
            Kind::Instant => Val::string(self.pick(&[
                "2026-01-01T00:00:00Z",
                "2030-06-30T12:00:00.123456+02:00",
                "1970-01-01T00:00:00Z",
                "0001-01-01T00:00:00Z",
                "9999-12-31T23:59:59.999999999Z",
                "+275760-09-13T00:00:00Z",
                "-262143-01-01T00:00:00Z",
                "+262142-12-31T23:59:59Z",
                "-4713-11-24T00:00:00Z",
                "-4714-11-23T00:00:00Z",
                "294276-12-31T23:59:59Z",
                "2026-13-45T25:61:61Z",
                "2026-02-30T00:00:00Z",
                "yesterday",
                "",
                "2026-01-01",
                "2026-01-01T00:00:00",
            ])),
            Kind::Statuses => {
                let n = self.below(7);
                let items: Vec<Val> = (0..n).map(|_| self.enum_value(STATUSES)).collect();
                list(items)
            }
            Kind::OrderField => self.enum_value(&["CREATED_AT", "UPDATED_AT", "PRIORITY"]),
            Kind::Direction => self.enum_value(&["ASC", "DESC"]),
            Kind::Filter => self.object(
                depth,
                &[
                    ("status", Kind::Statuses),
                    ("model", Kind::Model),
                    ("minPriority", Kind::Priority),
                    ("maxPriority", Kind::Priority),
                    ("createdAfter", Kind::Instant),
                    ("createdBefore", Kind::Instant),
                ],
                &[],
            ),
            Kind::Order => self.object(
                depth,
                &[("field", Kind::OrderField), ("direction", Kind::Direction)],
                &[],
            ),
            Kind::CreateInput => self.object(
                depth,
                &[
                    ("priority", Kind::Priority),
                    ("maxAttempts", Kind::Attempts),
                    ("runAt", Kind::Instant),
                    ("timeoutSeconds", Kind::Seconds),
                    ("system", Kind::Text),
                    ("temperature", Kind::Temperature),
                    ("maxTokens", Kind::Tokens),
                ],
                &[("prompt", Kind::Prompt), ("model", Kind::Model)],
            ),
            Kind::UpdateInput => self.object(
                depth,
                &[
                    ("prompt", Kind::Prompt),
                    ("model", Kind::Model),
                    ("priority", Kind::Priority),
                    ("maxAttempts", Kind::Attempts),
                ],
                &[],
            ),
        }
    }

    pub(super) fn int(&mut self, valid: &[i64], extreme: &[i64]) -> Val {
        let n = match self.below(10) {
            0..=5 => self.pick(valid),
            6..=8 => self.pick(extreme),
            _ if !self.messy => self.pick(extreme),
            _ => {
                // Out of Int's range, or not an integer at all.
                return match self.below(4) {
                    0 => Val::new("2147483648", json!(2_147_483_648_i64)),
                    1 => Val::new("-9223372036854775809", json!(-9.3e18)),
                    2 => Val::new("99999999999999999999999999", json!(1e26)),
                    _ => Val::new("1.5", json!(1.5)),
                };
            }
        };
        Val::new(n.to_string(), json!(n))
    }

    pub(super) fn float(&mut self) -> Val {
        match self.below(10) {
            0 | 1 | 6 if !self.messy => {
                Val::new("1.0000000000000002", json!(1.000_000_000_000_000_2))
            }
            0 => Val::new("1e308", json!(1e308)),
            1 => Val::new("1e309", json!(1e308)),
            2 => Val::new("-0.0", json!(-0.0)),
            3 => Val::new("2.0000001", json!(2.000_000_1)),
            4 => Val::new("-1", json!(-1)),
            5 => Val::new("5e-324", json!(5e-324)),
            6 => Val::new("\"NaN\"", json!("NaN")),
            _ => {
                let t = f64::from(self.rng.random_range(0..=200_u32)) / 100.0;
                Val::new(format!("{t:.2}"), json!(t))
            }
        }
    }

    pub(super) fn text(&mut self, prompt: bool) -> Val {
        let text = match self.below(20) {
            0 if self.chance(0.3) => "x".repeat(100_000),
            1 if prompt && self.chance(0.3) => "y".repeat(100_001),
            2 => "é".repeat(self.below(5_000)),
            3..=7 => self.pick(ODD_TEXTS).to_owned(),
            8 => (0..self.below(40))
                .map(|_| char::from_u32(self.rng.random_range(0..0x11_0000)).unwrap_or('\u{fffd}'))
                .collect(),
            _ => format!("Summarise report {}", self.below(1_000)),
        };
        Val::string(&text)
    }

    pub(super) fn cursor(&mut self) -> String {
        match self.below(10) {
            0..=2 if !self.cursors.is_empty() => {
                let index = self.below(self.cursors.len());
                self.cursors[index].clone()
            }
            3 => self.pick(ODD_TEXTS).to_owned(),
            4 => "!!!not base64!!!".to_owned(),
            5 => "A".repeat(self.below(20_000)),
            _ => {
                use base64::Engine as _;
                let field = self.pick(&[
                    TaskOrderField::CreatedAt,
                    TaskOrderField::UpdatedAt,
                    TaskOrderField::Priority,
                ]);
                let key = self.pick(&[
                    0,
                    -1,
                    i64::MAX,
                    i64::MIN,
                    32_768,
                    -32_769,
                    1_767_225_600_000_000,
                    9_000_000_000_000_000_000,
                    -9_000_000_000_000_000_000,
                    253_402_300_800_000_000,
                    -62_135_596_800_000_000,
                    -210_000_000_000_000_000,
                    -8_000_000_000_000_000_000,
                    8_000_000_000_000_000_000,
                ]);
                let id = self.pick(&[0, 1, -1, i64::MAX, i64::MIN]);
                if self.chance(0.7) {
                    Cursor { field, key, id }.encode()
                } else {
                    let text = self.pick(&[
                        "v1:c:1:1:1",
                        "v2:c:1:1",
                        "v1:x:1:1",
                        "v1:c:1",
                        "v1:p:1.5:1",
                        "v1:c: 1:1",
                        "v1:u:99999999999999999999:1",
                    ]);
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
                }
            }
        }
    }

    pub(super) fn id(&mut self, writable: bool) -> Val {
        match self.below(10) {
            0..=5 => {
                let ids = if writable {
                    self.writable.clone()
                } else {
                    self.readable.clone()
                };
                match ids.choose(&mut self.rng) {
                    Some(id) if self.chance(0.85) => Val::string(&id.to_string()),
                    Some(id) => Val::new(id.to_string(), json!(id)),
                    None => Val::string("1000000000000"),
                }
            }
            6 => Val::string(self.pick(&[
                "0",
                "-1",
                "abc",
                "",
                "1.5",
                "1e3",
                " 7",
                "١٢",
                "9223372036854775808",
            ])),
            7 => Val::string(&format!(
                "{}",
                1_000_000_000_000_i64 + self.rng.random_range(0..1_000_i64)
            )),
            8 => Val::new("99999999999999999999", json!(1e20)),
            _ => Val::string(&"9".repeat(self.below(5_000) + 1)),
        }
    }

    pub(super) fn enum_value(&mut self, values: &[&str]) -> Val {
        match self.below(12) {
            0 if self.messy => Val::new("\"PENDING\"", json!("pending")),
            1 if self.messy => Val::new("DONE", json!("DONE")),
            2 if self.messy => Val::new("pending", json!(1)),
            _ => {
                let value = self.pick(values);
                Val::new(value, json!(value))
            }
        }
    }

    /// An input object with some of `optional` and usually all of `required`.
    pub(super) fn object(
        &mut self,
        depth: usize,
        optional: &[(&str, Kind)],
        required: &[(&str, Kind)],
    ) -> Val {
        let mut literal = Vec::new();
        let mut json = serde_json::Map::new();
        for &(name, kind) in required {
            if self.oops(0.05) {
                continue; // a required field left out
            }
            let value = self.value(kind, depth + 1);
            literal.push(format!("{name}: {}", value.literal));
            json.insert(name.to_owned(), value.json);
        }
        for &(name, kind) in optional {
            if self.chance(0.4) {
                let value = if self.chance(0.1) {
                    Val::new("null", Value::Null)
                } else {
                    self.value(kind, depth + 1)
                };
                literal.push(format!("{name}: {}", value.literal));
                json.insert(name.to_owned(), value.json);
            }
        }
        if self.oops(0.05) {
            literal.push("unknownField: 1".to_owned());
            json.insert("unknownField".to_owned(), json!(1));
        }
        if self.oops(0.03) && !literal.is_empty() {
            let repeated = literal[0].clone();
            literal.push(repeated); // a field given twice
        }
        Val::new(format!("{{ {} }}", literal.join(", ")), Value::Object(json))
    }

    /// A value of the wrong type for anything.
    pub(super) fn wrong_value(&mut self) -> Val {
        match self.below(9) {
            0 => Val::new("null", Value::Null),
            1 => Val::new("true", json!(true)),
            2 => Val::new("[1, 2, 3]", json!([1, 2, 3])),
            3 => Val::new("{ a: 1 }", json!({ "a": 1 })),
            4 => Val::new("\"a string\"", json!("a string")),
            5 => Val::new("3.25", json!(3.25)),
            6 => Val::new("-42", json!(-42)),
            7 => Val::new("SOME_ENUM", json!("SOME_ENUM")),
            _ => {
                let nested = "[".repeat(200) + &"]".repeat(200);
                Val::new(nested.clone(), json!(nested))
            }
        }
    }

    pub(super) fn wrong_json(&mut self) -> Value {
        match self.below(6) {
            0 => json!({ "deep": { "er": { "still": [[[[[[1]]]]]] } } }),
            1 => json!(1e300),
            2 => json!(u64::MAX),
            3 => json!([null, null]),
            4 => json!("\u{0}"),
            _ => json!(false),
        }
    }
}

/// `items` as a list value.
pub(super) fn list(items: Vec<Val>) -> Val {
    let literal = items
        .iter()
        .map(|item| item.literal.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let json = items.into_iter().map(|item| item.json).collect();
    Val::new(format!("[{literal}]"), Value::Array(json))
}
