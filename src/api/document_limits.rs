//! Bounds on the work a document can cause before it is validated.
//!
//! async-graphql's depth and complexity checks expand a fragment spread
//! again every time they meet it, so a 600-byte document whose fragments
//! spread each other three times per level costs 3^levels before any field
//! is resolved or any token checked. Here the document is measured once,
//! right after parsing, with each fragment's expanded size computed once
//! (memoised), and refused past small limits. The request pipeline
//! (`pipeline`) runs this for every operation, on HTTP and on websockets,
//! with or without a token, before async-graphql's own checks.

use async_graphql::Positioned;
use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use std::collections::HashMap;

/// Fields once fragments are expanded: the depth and complexity checks walk
/// this many. The app's largest operation expands to about 150.
pub const MAX_EXPANDED_FIELDS: u64 = 5_000;
/// Syntax nodes of the document as written (fields, arguments, values,
/// directives, spreads, variables): a bound on the parser's output.
pub const MAX_NODES: u64 = 10_000;
pub const MAX_ALIASES: u64 = 100;
pub const MAX_FRAGMENT_SPREADS: u64 = 500;
pub const MAX_FRAGMENTS: usize = 200;

/// Why `document` is refused, if it is.
pub fn check(document: &ExecutableDocument) -> Result<(), String> {
    if document.fragments.len() > MAX_FRAGMENTS {
        return Err(format!(
            "The document has more than {MAX_FRAGMENTS} fragments"
        ));
    }
    let mut measure = Measure {
        document,
        expanded: HashMap::new(),
        written: Counts::default(),
    };
    for fragment in document.fragments.values() {
        measure.count_written(&fragment.node.selection_set);
    }
    let mut expanded = 0u64;
    for (_, operation) in document.operations.iter() {
        measure.written.nodes += operation.node.variable_definitions.len() as u64;
        measure.written.nodes += operation.node.directives.len() as u64;
        measure.count_written(&operation.node.selection_set);
        expanded = expanded.saturating_add(measure.expand(&operation.node.selection_set, 0)?);
    }
    let written = &measure.written;
    if written.aliases > MAX_ALIASES {
        return Err(format!("The document has more than {MAX_ALIASES} aliases"));
    }
    if written.spreads > MAX_FRAGMENT_SPREADS {
        return Err(format!(
            "The document has more than {MAX_FRAGMENT_SPREADS} fragment spreads"
        ));
    }
    if written.nodes > MAX_NODES {
        return Err(format!(
            "The document is too long: more than {MAX_NODES} fields, arguments and values"
        ));
    }
    if expanded > MAX_EXPANDED_FIELDS {
        return Err(format!(
            "The document is too large: its fragments expand to more than {MAX_EXPANDED_FIELDS} fields"
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Counts {
    nodes: u64,
    aliases: u64,
    spreads: u64,
}

enum Expansion {
    InProgress,
    Done(u64),
}

struct Measure<'a> {
    document: &'a ExecutableDocument,
    /// Each fragment's expanded size, computed once.
    expanded: HashMap<&'a str, Expansion>,
    written: Counts,
}

impl<'a> Measure<'a> {
    /// The document as written, every selection set once.
    fn count_written(&mut self, set: &'a Positioned<SelectionSet>) {
        for selection in &set.node.items {
            match &selection.node {
                Selection::Field(field) => {
                    self.written.nodes += 1 + field_arguments_size(&field.node);
                    self.written.aliases += u64::from(field.node.alias.is_some());
                    self.count_written(&field.node.selection_set);
                }
                Selection::FragmentSpread(spread) => {
                    self.written.nodes += 1 + spread.node.directives.len() as u64;
                    self.written.spreads += 1;
                }
                Selection::InlineFragment(fragment) => {
                    self.written.nodes += 1 + fragment.node.directives.len() as u64;
                    self.count_written(&fragment.node.selection_set);
                }
            }
        }
    }

    /// Fields in `set` with every spread expanded; saturates well before
    /// overflowing, and stops early once past the limit.
    fn expand(&mut self, set: &'a Positioned<SelectionSet>, depth: usize) -> Result<u64, String> {
        // Deeper than any limit the schema accepts: no need to go on.
        if depth > 64 {
            return Err("The document nests too deeply".into());
        }
        let mut total = 0u64;
        for selection in &set.node.items {
            let size = match &selection.node {
                Selection::Field(field) => 1 + self.expand(&field.node.selection_set, depth + 1)?,
                Selection::InlineFragment(fragment) => {
                    self.expand(&fragment.node.selection_set, depth + 1)?
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    match self.expanded.get(name) {
                        Some(Expansion::Done(size)) => *size,
                        Some(Expansion::InProgress) => {
                            return Err(format!("Fragment \"{name}\" spreads itself"));
                        }
                        None => {
                            // Unknown fragments are for validation to report.
                            let Some(fragment) = self.document.fragments.get(name) else {
                                continue;
                            };
                            self.expanded.insert(name, Expansion::InProgress);
                            let size = self.expand(&fragment.node.selection_set, depth + 1)?;
                            self.expanded.insert(name, Expansion::Done(size));
                            size
                        }
                    }
                }
            };
            total = total.saturating_add(size);
            if total > MAX_EXPANDED_FIELDS {
                return Ok(total);
            }
        }
        Ok(total)
    }
}

fn field_arguments_size(field: &Field) -> u64 {
    let arguments: u64 = field
        .arguments
        .iter()
        .map(|(_, value)| 1 + value_size(&value.node))
        .sum();
    arguments + field.directives.len() as u64
}

fn value_size(value: &async_graphql_value::Value) -> u64 {
    use async_graphql_value::Value;
    match value {
        Value::List(items) => 1 + items.iter().map(value_size).sum::<u64>(),
        Value::Object(fields) => 1 + fields.values().map(value_size).sum::<u64>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{...F0}`, each fragment spreading the next `spreads` times.
    fn exponential(levels: usize, spreads: usize) -> String {
        let mut document = String::from("{...F0}");
        for level in 0..levels {
            let body = vec![format!("...F{}", level + 1); spreads].join(" ");
            document.push_str(&format!(" fragment F{level} on Query {{{body}}}"));
        }
        document.push_str(&format!(" fragment F{levels} on Query {{__typename}}"));
        document
    }

    fn check_text(text: &str) -> Result<(), String> {
        check(&async_graphql::parser::parse_query(text).unwrap())
    }

    #[test]
    fn an_exponential_document_is_refused_at_once() {
        let started = std::time::Instant::now();
        let refusal = check_text(&exponential(20, 3)).unwrap_err();
        assert!(refusal.contains("expand"), "{refusal}");
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        // Small expansions are fine: 3^5 = 243 fields.
        check_text(&exponential(5, 3)).unwrap();
    }

    #[test]
    fn aliases_spreads_and_cycles_are_bounded() {
        let aliases: String = (0..101).map(|i| format!("a{i}: __typename ")).collect();
        assert!(
            check_text(&format!("{{ {aliases} }}"))
                .unwrap_err()
                .contains("aliases")
        );
        let spreads = "...F ".repeat(501);
        assert!(
            check_text(&format!(
                "{{ {spreads} }} fragment F on Query {{ __typename }}"
            ))
            .unwrap_err()
            .contains("spreads")
        );
        assert!(
            check_text("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
                .unwrap_err()
                .contains("spreads itself")
        );
    }

    #[test]
    fn long_argument_values_count() {
        let list = vec!["1"; MAX_NODES as usize + 1].join(",");
        assert!(
            check_text(&format!("{{ f(x: [{list}]) }}"))
                .unwrap_err()
                .contains("too long")
        );
    }
}
