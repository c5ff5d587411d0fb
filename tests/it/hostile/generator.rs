//! The generator of hostile requests: a seeded RNG, what it knows of the
//! database, and the mix of request kinds.

use axum::body::{Body, HttpBody as _};
use axum::http::{Request, header};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde_json::Value;

use super::clip;

/// What a request's success would change, so the test knows which tasks to expect.
pub(super) enum Track {
    Nothing,
    /// A lone `createTask` under this alias.
    Create(String),
    /// A lone `deleteTask` under this alias.
    Delete(String),
}

/// One generated request.
pub(super) struct Case {
    pub(super) kind: &'static str,
    pub(super) request: Request<Body>,
    pub(super) track: Track,
}

impl Case {
    /// The request in a line, for failure reports.
    pub(super) fn summary(&self) -> String {
        let content_type = self
            .request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .unwrap_or_default();
        let body = match self.request.body().size_hint().exact() {
            Some(n) => format!("{n}-byte body"),
            None => "streamed body".to_owned(),
        };
        format!(
            "{} {} [{content_type}] {body}",
            self.request.method(),
            clip(&self.request.uri().to_string(), 300)
        )
    }
}

/// The variables and fragments of the document being generated.
#[derive(Default)]
pub(super) struct Document {
    /// (name, declared type, value or absent)
    pub(super) variables: Vec<(String, String, Option<Value>)>,
    /// (name, type condition, selection)
    pub(super) fragments: Vec<(String, &'static str, String)>,
    /// Aliases given so far.
    pub(super) aliases: usize,
}

/// The generator: a seeded RNG and what it knows of the database.
pub(super) struct Generator {
    pub(super) rng: StdRng,
    /// Ids queries may read: the originals and the sacrifices.
    pub(super) readable: Vec<i64>,
    /// Ids mutations may change: the sacrifices, never an original. (Tasks
    /// the requests create are left alone, so that what is generated never
    /// depends on an answer.)
    pub(super) writable: Vec<i64>,
    pub(super) cursors: Vec<String>,
    pub(super) doc: Document,
    /// Whether the document being generated may break the schema's rules
    /// (unknown fields, wrong types, missing arguments); when not, it reaches
    /// the resolvers with values that are only extreme.
    pub(super) messy: bool,
}

impl Generator {
    pub(super) fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// `chance(p)`, but never in a tidy document.
    pub(super) fn oops(&mut self, p: f64) -> bool {
        self.messy && self.chance(p)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    pub(super) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        *items.choose(&mut self.rng).expect("a non-empty list")
    }

    /// The next request.
    pub(super) fn case(&mut self) -> Case {
        self.doc = Document::default();
        self.messy = self.chance(0.5);
        match self.below(100) {
            0..=41 => self.document_case("document", false),
            42..=49 => self.document_case("document over GET", true),
            50..=55 => self.tracked_mutation(),
            56..=59 => self.deep(),
            60..=61 => self.many_aliases(),
            62..=65 => self.fragments(),
            66..=71 => self.many_operations(),
            72..=77 => self.bad_json(),
            78..=81 => self.bad_utf8(),
            82..=86 => self.wrong_content_type(),
            87..=90 => self.odd_method_or_path(),
            91 => self.huge_body(),
            92..=95 => self.wrong_variables(),
            _ => self.odd_headers(),
        }
    }
}
