//! GraphQL documents over the schema: selections, fields, fragments,
//! variables and operations.

use std::fmt::Write as _;

use rand::seq::IndexedRandom;
use serde_json::{Value, json};

use super::generator::{Generator, Track};
use super::values::Kind;

pub(super) const TASK_FIELDS: &[&str] = &[
    "id",
    "prompt",
    "model",
    "priority",
    "status",
    "result",
    "error",
    "attempts",
    "maxAttempts",
    "createdAt",
    "updatedAt",
    "startedAt",
    "finishedAt",
    "runAt",
    "system",
    "temperature",
    "maxTokens",
    "timeoutSeconds",
    "promptTokens",
    "completionTokens",
    "workerId",
    "cancelRequested",
];
pub(super) const STATS_FIELDS: &[&str] = &[
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "oldestPendingAgeSeconds",
];
pub(super) const PAGE_INFO_FIELDS: &[&str] =
    &["hasPreviousPage", "hasNextPage", "startCursor", "endCursor"];
pub(super) const BOGUS_FIELDS: &[&str] =
    &["nope", "__schema", "password", "tasks", "node", "Id", "id_"];

impl Generator {
    /// Sometimes an alias: in a messy document one that may clash with
    /// another, in a tidy one a fresh one.
    pub(super) fn alias(&mut self) -> String {
        if !self.chance(0.15) {
            return String::new();
        }
        if self.messy {
            format!("a{}: ", self.below(50))
        } else {
            self.fresh_alias()
        }
    }

    pub(super) fn fresh_alias(&mut self) -> String {
        self.doc.aliases += 1;
        format!("r{}: ", self.doc.aliases)
    }

    /// The alias of a root field: in a tidy document always a fresh one, as
    /// two `tasks` with different arguments need different names.
    pub(super) fn root_alias(&mut self) -> String {
        if self.messy {
            self.alias()
        } else {
            self.fresh_alias()
        }
    }

    /// A selection of a task's fields.
    pub(super) fn task_selection(&mut self, depth: usize) -> String {
        let mut parts = Vec::new();
        for _ in 0..=self.below(6) {
            let roll = self.below(100);
            let part = match roll {
                0..=4 | 11 if !self.messy => format!("{}{}", self.alias(), self.pick(TASK_FIELDS)),
                0..=2 => self.pick(BOGUS_FIELDS).to_owned(),
                3 => "id { id }".to_owned(),
                4 => "prompt(limit: 3)".to_owned(),
                5..=7 => "__typename".to_owned(),
                8..=10 if depth < 6 => {
                    format!("... on Task {}", self.task_selection(depth + 1))
                }
                11 => "... on Query { models { name } }".to_owned(),
                12..=15 => self.spread("Task", depth),
                16 => "status @skip(if: true)".to_owned(),
                17 => "status @include(if: $flag)".to_owned(),
                _ => format!("{}{}", self.alias(), self.pick(TASK_FIELDS)),
            };
            parts.push(part);
        }
        if parts.iter().any(|part| part.contains("$flag")) {
            let flag = if self.chance(0.8) {
                Some(json!(self.chance(0.5)))
            } else {
                None
            };
            if !self.doc.variables.iter().any(|(name, _, _)| name == "flag") {
                self.doc
                    .variables
                    .push(("flag".to_owned(), "Boolean!".to_owned(), flag));
            }
        }
        format!("{{ {} }}", parts.join(" "))
    }

    /// A spread of a new or already defined fragment on `on`.
    pub(super) fn spread(&mut self, on: &'static str, depth: usize) -> String {
        let reuse: Vec<String> = self
            .doc
            .fragments
            .iter()
            // In a messy document a fragment may spread one still being
            // written, itself included: a cycle.
            .filter(|(_, condition, selection)| {
                *condition == on && (self.messy || !selection.is_empty())
            })
            .map(|(name, _, _)| name.clone())
            .collect();
        if !reuse.is_empty() && self.chance(0.5) {
            return format!("...{}", reuse.choose(&mut self.rng).expect("non-empty"));
        }
        if self.oops(0.05) {
            return "...Undefined".to_owned();
        }
        let name = format!("F{}", self.doc.fragments.len());
        // Reserve the name first, so a nested spread can name it: a cycle.
        self.doc.fragments.push((name.clone(), on, String::new()));
        let selection = if depth >= 6 {
            "{ __typename }".to_owned()
        } else if on == "Task" {
            self.task_selection(depth + 1)
        } else {
            self.connection_selection(depth + 1)
        };
        let slot = self
            .doc
            .fragments
            .iter_mut()
            .find(|(fragment, _, _)| *fragment == name)
            .expect("reserved");
        slot.2 = selection;
        format!("...{name}")
    }

    /// A selection of a task page's fields.
    pub(super) fn connection_selection(&mut self, depth: usize) -> String {
        let mut parts = Vec::new();
        for _ in 0..=self.below(4) {
            let part = match self.below(10) {
                0 => format!("{}totalCount", self.alias()),
                1 => {
                    let fields: Vec<&str> = (0..=self.below(4))
                        .map(|_| self.pick(PAGE_INFO_FIELDS))
                        .collect();
                    format!("pageInfo {{ {} }}", fields.join(" "))
                }
                2..=4 => format!("edges {{ cursor node {} }}", self.task_selection(depth + 1)),
                5..=7 => format!("nodes {}", self.task_selection(depth + 1)),
                8 if depth < 5 => self.spread("TaskConnection", depth),
                _ if !self.messy => "__typename".to_owned(),
                _ => self
                    .pick(&[
                        "edges",
                        "pageInfo",
                        "totalCount { x }",
                        "__typename",
                        "cursor",
                    ])
                    .to_owned(),
            };
            parts.push(part);
        }
        format!("{{ {} }}", parts.join(" "))
    }

    /// One field of the Query type, arguments and selection included.
    pub(super) fn query_field(&mut self) -> String {
        let alias = self.root_alias();
        match self.below(10) {
            0..=2 => {
                let args = match (self.messy, self.below(12)) {
                    (true, 0) => String::new(), // a required argument left out
                    (true, 1) => "(id: 1, id: 2)".to_owned(),
                    (true, 2) => format!("(id: {}, extra: 1)", self.argument(Kind::Id)),
                    _ => format!("(id: {})", self.argument(Kind::Id)),
                };
                let selection = if self.oops(0.03) {
                    String::new()
                } else {
                    self.task_selection(1)
                };
                format!("{alias}task{args} {selection}")
            }
            3..=6 => {
                let mut args = Vec::new();
                for (name, kind) in [
                    ("first", Kind::PageSize),
                    ("after", Kind::Cursor),
                    ("last", Kind::PageSize),
                    ("before", Kind::Cursor),
                    ("filter", Kind::Filter),
                    ("orderBy", Kind::Order),
                ] {
                    if self.chance(0.3) {
                        args.push(format!("{name}: {}", self.argument(kind)));
                    }
                }
                let args = if args.is_empty() {
                    String::new()
                } else {
                    format!("({})", args.join(", "))
                };
                format!("{alias}tasks{args} {}", self.connection_selection(1))
            }
            7 => {
                let fields: Vec<&str> = (0..=self.below(6))
                    .map(|_| self.pick(STATS_FIELDS))
                    .collect();
                format!("{alias}taskStats {{ {} }}", fields.join(" "))
            }
            8 => format!("{alias}models {{ name provider }}"),
            _ if !self.messy => "__typename __schema { queryType { name } }".to_owned(),
            _ => self
                .pick(&[
                    "__typename",
                    "__schema { queryType { name } types { name kind } }",
                    "__type(name: \"Task\") { fields { name type { name ofType { name } } } }",
                    "__type(name: \"\\u0000\") { name }",
                    "nope",
                    "models",
                    "taskStats(x: 1) { pending }",
                ])
                .to_owned(),
        }
    }

    /// One field of the Mutation type, never touching an original task, and
    /// what its success would change.
    pub(super) fn mutation_field(&mut self) -> (String, Track) {
        let alias = self.root_alias();
        // The key of the field in `data`.
        let key = |field: &str| match alias.strip_suffix(": ") {
            Some(alias) => alias.to_owned(),
            None => field.to_owned(),
        };
        let field = match self.below(6) {
            0 => {
                // Always with the id, to know which task it made.
                let field = format!(
                    "{alias}createTask(input: {}) {{ id {} }}",
                    self.argument(Kind::CreateInput),
                    self.task_selection(1)
                );
                return (field, Track::Create(key("createTask")));
            }
            4 => {
                let field = format!("{alias}deleteTask(id: {})", self.argument(Kind::WritableId));
                return (field, Track::Delete(key("deleteTask")));
            }
            1 => format!(
                "{alias}updateTask(id: {}, input: {}) {}",
                self.argument(Kind::WritableId),
                self.argument(Kind::UpdateInput),
                self.task_selection(1)
            ),
            2 => format!(
                "{alias}cancelTask(id: {}) {}",
                self.argument(Kind::WritableId),
                self.task_selection(1)
            ),
            3 => format!(
                "{alias}retryTask(id: {}) {}",
                self.argument(Kind::WritableId),
                self.task_selection(1)
            ),
            _ if !self.messy => format!(
                "{alias}cancelTask(id: {}) {{ id status }}",
                self.argument(Kind::WritableId)
            ),
            // Invalid, so never run (an original task's id would show it if it were).
            _ => self
                .pick(&[
                    "updateTask { id }",
                    "createTask(input: {}) { id }",
                    "deleteTask(id: \"1\") { id }",
                    "nope",
                ])
                .to_owned(),
        };
        (field, Track::Nothing)
    }

    /// The operations' header (variables) and the fragments, around `body`.
    pub(super) fn finish(&mut self, operation: &str, body: &str) -> (String, Value) {
        let mut header = String::new();
        let mut variables = serde_json::Map::new();
        if !self.doc.variables.is_empty() {
            let declared: Vec<String> = self
                .doc
                .variables
                .iter()
                .map(|(name, ty, _)| format!("${name}: {ty}"))
                .collect();
            header = format!("({})", declared.join(", "));
            for (name, _, value) in &self.doc.variables {
                if let Some(value) = value {
                    variables.insert(name.clone(), value.clone());
                }
            }
        }
        if self.oops(0.03) {
            variables.insert("unused".to_owned(), json!(1));
        }
        let mut text = format!("{operation}{header} {body}");
        for (name, on, selection) in &self.doc.fragments {
            let _ = write!(text, "\nfragment {name} on {on} {selection}");
        }
        if self.oops(0.02) {
            text.push_str("\nfragment Unused on Task { id }");
        }
        (text, Value::Object(variables))
    }

    /// A random document over the schema: a query, or a mutation on tasks made
    /// to be changed, and what its success would change. A mutation that
    /// creates or deletes is the document's only field: were another field to
    /// fail, `data` would be null and the change unseen.
    pub(super) fn random_document(&mut self) -> (String, Value, Track) {
        let mutation = self.chance(0.35);
        let mut fields = Vec::new();
        let mut track = Track::Nothing;
        if mutation {
            let (field, first_track) = self.mutation_field();
            fields.push(field);
            if matches!(first_track, Track::Nothing) {
                for _ in 0..self.below(4) {
                    let (field, more) = self.mutation_field();
                    if matches!(more, Track::Nothing) {
                        fields.push(field);
                    }
                }
            }
            track = first_track;
        } else {
            for _ in 0..=self.below(4) {
                let field = self.query_field();
                fields.push(field);
            }
        }
        let operation = match (mutation, self.below(4)) {
            (true, 0) => "mutation Change",
            (true, _) => "mutation",
            (false, 0) => "query Read",
            (false, 1) => "query",
            (false, 2) if self.messy => "subscription",
            (false, _) => "",
        };
        let operation = if operation.is_empty() && !self.doc.variables.is_empty() {
            "query"
        } else {
            operation
        };
        let body = format!("{{ {} }}", fields.join(" "));
        let (query, variables) = self.finish(operation, &body);
        (query, variables, track)
    }
}
