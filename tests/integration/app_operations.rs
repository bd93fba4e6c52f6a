//! The app's own operations (../shared/reference/selfprivacy-app/*.graphql),
//! sent as the app sends them: one operation with the fragments it uses.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn reference_dir() -> PathBuf {
    std::env::var("SP_APP_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/selfprivacy-app")
        })
}

/// Top-level definitions (`query X`, `mutation X`, `fragment X on T`) by
/// name, from every operations file.
fn definitions() -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let dir = reference_dir();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "graphql") || path.ends_with("schema.graphql") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut depth = 0;
        let mut start = None;
        for (i, c) in text.char_indices() {
            match c {
                '{' => {
                    if depth == 0 && start.is_none() {
                        start = Some(text[..i].rfind('}').map_or(0, |j| j + 1));
                    }
                    depth += 1;
                }
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        let body = text[start.take().unwrap()..=i].trim().to_owned();
                        let mut words = body.split_whitespace();
                        let _kind = words.next();
                        let name = words
                            .next()
                            .unwrap_or("")
                            .split(['(', '{'])
                            .next()
                            .unwrap()
                            .to_owned();
                        found.insert(name, body);
                    }
                }
                _ => {}
            }
        }
    }
    found
}

/// `__typename` in every selection set, as the app's code generator adds
/// it (all but a subscription's root).
fn with_typenames(definition: &str) -> String {
    let subscription = definition.trim_start().starts_with("subscription");
    let mut out = String::with_capacity(definition.len() * 2);
    let mut first = true;
    for c in definition.chars() {
        out.push(c);
        if c == '{' {
            if !(first && subscription) {
                out.push_str(" __typename");
            }
            first = false;
        }
    }
    out
}

/// The operation `name` followed by every fragment it uses.
pub fn operation(name: &str) -> String {
    let document = operation_as_written(name);
    with_typenames(&document)
}

fn operation_as_written(name: &str) -> String {
    let all = definitions();
    let mut document = all
        .get(name)
        .unwrap_or_else(|| panic!("no operation {name}"))
        .clone();
    let mut included: Vec<String> = Vec::new();
    loop {
        let wanted: Vec<String> = document
            .match_indices("...")
            .map(|(i, _)| {
                document[i + 3..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|n| !n.is_empty() && n != "on" && !included.contains(n) && all.contains_key(n))
            .collect();
        if wanted.is_empty() {
            return document;
        }
        for fragment in wanted {
            if !included.contains(&fragment) {
                document.push_str("\n\n");
                document.push_str(&all[&fragment]);
                included.push(fragment);
            }
        }
    }
}
