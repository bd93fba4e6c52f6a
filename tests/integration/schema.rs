//! The schema contract: the checked-in SDL is what the code serves, and it
//! has every type, field, argument and value of the app's schema.

use async_graphql_parser::types::{TypeKind, TypeSystemDefinition};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

#[test]
fn schema_graphql_matches_the_code() {
    let exported = selfprivacy_api::api::export_sdl();
    let checked_in = std::fs::read_to_string(repo_file("schema.graphql")).unwrap_or_default();
    if exported != checked_in {
        panic!("schema.graphql is out of date: run `cargo run -- export-schema > schema.graphql`");
    }
}

/// "Type.field(arg)" -> "type and default", for every part of a schema.
fn contract(sdl: &str) -> BTreeMap<String, String> {
    let document = async_graphql_parser::parse_schema(sdl).expect("valid SDL");
    let mut parts = BTreeMap::new();
    for definition in document.definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let ty = ty.node;
        let name = ty.name.node.to_string();
        match ty.kind {
            TypeKind::Scalar => {
                parts.insert(name, "scalar".into());
            }
            TypeKind::Object(object) => {
                for interface in &object.implements {
                    parts.insert(
                        format!("{name} implements {}", interface.node),
                        String::new(),
                    );
                }
                for field in object.fields {
                    let field = field.node;
                    let key = format!("{name}.{}", field.name.node);
                    for arg in field.arguments {
                        let arg = arg.node;
                        parts.insert(
                            format!("{key}({})", arg.name.node),
                            format!(
                                "{} = {:?}",
                                arg.ty.node,
                                arg.default_value.map(|v| v.node.to_string())
                            ),
                        );
                    }
                    parts.insert(key, field.ty.node.to_string());
                }
                parts.insert(name, "type".into());
            }
            TypeKind::Interface(interface) => {
                for field in interface.fields {
                    parts.insert(
                        format!("{name}.{}", field.node.name.node),
                        field.node.ty.node.to_string(),
                    );
                }
                parts.insert(name, "interface".into());
            }
            TypeKind::Union(union) => {
                let mut members: Vec<String> =
                    union.members.iter().map(|m| m.node.to_string()).collect();
                members.sort();
                parts.insert(name, format!("union {}", members.join(" | ")));
            }
            TypeKind::Enum(values) => {
                for value in values.values {
                    parts.insert(format!("{name}::{}", value.node.value.node), String::new());
                }
                parts.insert(name, "enum".into());
            }
            TypeKind::InputObject(input) => {
                for field in input.fields {
                    let field = field.node;
                    parts.insert(
                        format!("{name}.{}", field.name.node),
                        format!(
                            "{} = {:?}",
                            field.ty.node,
                            field.default_value.map(|v| v.node.to_string())
                        ),
                    );
                }
                parts.insert(name, "input".into());
            }
        }
    }
    parts
}

#[test]
fn every_part_of_the_apps_schema_exists_with_the_same_type() {
    let reference_path = std::env::var("SP_APP_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_file("../shared/reference/selfprivacy-app/schema.graphql"));
    let reference = std::fs::read_to_string(&reference_path)
        .unwrap_or_else(|e| panic!("the app's schema at {}: {e}", reference_path.display()));
    let ours = contract(&selfprivacy_api::api::export_sdl());
    let theirs = contract(&reference);
    assert!(
        theirs.len() > 500,
        "the reference was parsed ({} parts)",
        theirs.len()
    );
    let mut differences = Vec::new();
    for (part, shape) in &theirs {
        match ours.get(part) {
            None => differences.push(format!("missing: {part} ({shape})")),
            Some(our_shape) if our_shape != shape => differences.push(format!(
                "differs: {part}: app has {shape}, we have {our_shape}"
            )),
            Some(_) => {}
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
