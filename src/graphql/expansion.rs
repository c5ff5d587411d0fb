//! A limit on the size of a query once its fragments are inlined.
//!
//! async-graphql inlines fragment spreads wherever it walks a query (its
//! recursion and directive checks, the complexity count, execution) and does
//! not remember a fragment between spreads. Thirty fragments that each spread
//! the next one twice are a few hundred bytes, and a billion fields: the
//! engine would spend minutes of CPU on one request before its complexity
//! limit could refuse it (a field like `__typename` costs nothing there, so
//! such a query may not even be refused). [`check`] counts once per fragment,
//! before the engine looks, and refuses what is too large.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ErrorExtensionValues, Request, ServerError};

use crate::graphql::VALIDATION_FAILED;

/// The most selections (fields, fragment spreads, inline fragments) a query
/// may hold once every fragment is inlined. GraphiQL's introspection query
/// has a few hundred; the 2,000-alias request that the complexity limit
/// refuses has 4,000, so it still gets the engine's own answer.
pub const MAX_SELECTIONS: usize = 10_000;

/// How deep the count follows fields and fragments before it refuses the
/// query. The engine's own limit (32) is lower; this one only keeps a chain
/// of thousands of fragments from overflowing the stack here.
const MAX_NESTING: usize = 64;

/// Refuses a request whose query holds more than [`MAX_SELECTIONS`]
/// selections once its fragments are inlined, or nests deeper than
/// [`MAX_NESTING`]. The parsed query stays in the request, so the engine does
/// not parse it again; a query that does not parse is left to the engine to
/// report.
pub fn check(request: &mut Request) -> Result<(), ServerError> {
    let Ok(document) = request.parsed_query() else {
        return Ok(());
    };
    let refusal = match expanded_size(document) {
        Ok(size) if size <= MAX_SELECTIONS => return Ok(()),
        Ok(size) => format!(
            "Query is too large: {size} selections once its fragments are inlined; \
             the limit is {MAX_SELECTIONS}."
        ),
        Err(TooDeep) => format!(
            "Query is nested too deep: fields and fragments more than {MAX_NESTING} levels deep."
        ),
    };
    let mut error = ServerError::new(refusal, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", VALIDATION_FAILED);
    error.extensions = Some(extensions);
    Err(error)
}

/// The nesting was over [`MAX_NESTING`].
#[derive(Debug, PartialEq, Eq)]
struct TooDeep;

/// How many selections the document's operations hold with every fragment
/// inlined (saturating), counting each fragment's size once.
fn expanded_size(document: &ExecutableDocument) -> Result<usize, TooDeep> {
    let mut expansion = Expansion {
        document,
        fragments: HashMap::new(),
    };
    let mut total: usize = 0;
    for (_, operation) in document.operations.iter() {
        let size = expansion.selection_set(&operation.node.selection_set.node, 0)?;
        total = total.saturating_add(size);
    }
    Ok(total)
}

struct Expansion<'a> {
    document: &'a ExecutableDocument,
    /// Each fragment's inlined size; `None` while it is being counted, so a
    /// cycle (which validation refuses) counts as nothing instead of forever.
    fragments: HashMap<&'a str, Option<usize>>,
}

impl<'a> Expansion<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet, depth: usize) -> Result<usize, TooDeep> {
        if depth > MAX_NESTING {
            return Err(TooDeep);
        }
        let mut size: usize = 0;
        for selection in &set.items {
            let inner = match &selection.node {
                Selection::Field(field) => {
                    self.selection_set(&field.node.selection_set.node, depth + 1)?
                }
                Selection::InlineFragment(fragment) => {
                    self.selection_set(&fragment.node.selection_set.node, depth + 1)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str(), depth + 1)?
                }
            };
            size = size.saturating_add(1).saturating_add(inner);
        }
        Ok(size)
    }

    fn fragment(&mut self, name: &'a str, depth: usize) -> Result<usize, TooDeep> {
        match self.fragments.get(name) {
            Some(Some(size)) => return Ok(*size),
            Some(None) => return Ok(0),
            None => {}
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return Ok(0); // unknown: validation reports it
        };
        self.fragments.insert(name, None);
        let size = self.selection_set(&fragment.node.selection_set.node, depth)?;
        self.fragments.insert(name, Some(size));
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(query: &str) -> Result<usize, TooDeep> {
        expanded_size(&async_graphql::parser::parse_query(query).expect("parses"))
    }

    #[test]
    fn counts_fields_and_inlines_fragments() {
        assert_eq!(size("{ a b { c d } }"), Ok(4));
        // The spread (1) and the fragment's two fields, inlined twice.
        assert_eq!(
            size("{ x: t { ...F } y: t { ...F } } fragment F on T { a b }"),
            Ok(2 * (1 + 1 + 2))
        );
        assert_eq!(size("{ ... on Query { a } }"), Ok(2));
    }

    #[test]
    fn doubling_fragments_are_counted_without_walking_them() {
        let mut query = String::from("{ ...F0 }\n");
        for i in 0..60 {
            query.push_str(&format!(
                "fragment F{i} on Query {{ ...F{n} ...F{n} }}\n",
                n = i + 1
            ));
        }
        query.push_str("fragment F60 on Query { __typename }");
        let counted = size(&query).expect("not too deep");
        assert!(counted > MAX_SELECTIONS, "{counted}");
    }

    #[test]
    fn cycles_end_and_long_chains_are_too_deep() {
        assert!(size("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }").is_ok());
        let mut chain = String::from("{ ...F0 }\n");
        for i in 0..5_000 {
            chain.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i + 1));
        }
        assert_eq!(size(&chain), Err(TooDeep));
    }
}
