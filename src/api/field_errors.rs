//! Field errors as the GraphQL specification handles them ("Handling Field
//! Errors", "Errors and Non-Null Fields").
//!
//! async-graphql leaves a failed field out of its parent object, and turns an
//! object whose every field failed into `null`, whatever the schema says of
//! nullability. The app's generated client reads non-null fields as always
//! present, so every response with errors is put right here, once for every
//! operation (HTTP and websocket, queries, mutations and subscription
//! events):
//! - a failed nullable field is `null`;
//! - a failed non-null field makes its nearest nullable ancestor `null`, and
//!   `data` itself when there is none;
//! - every field error carries `path` and `locations`.
//!
//! Only responses with errors are touched (by the request pipeline,
//! `pipeline`, with the document it prepared).

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, Type,
};
use async_graphql::registry::Registry;
use async_graphql::{Name, PathSegment, Pos, Positioned, Response, Value};

/// Puts `response` right for the operation `operation_name` of `document`.
pub fn apply(
    registry: &Registry,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    response: &mut Response,
) {
    let Some((root_type, selection_set)) = operation(registry, document, operation_name) else {
        return;
    };
    let walker = Walker { registry, document };
    let mut null_paths = Vec::new();
    for error in &mut response.errors {
        if error.path.is_empty() {
            continue;
        }
        let Some(steps) = walker.steps(&root_type, selection_set, &error.path) else {
            continue;
        };
        if error.locations.is_empty()
            && let Some(pos) = steps.iter().rev().find_map(|s| s.field_pos)
        {
            error.locations = vec![pos];
        }
        // The nearest position that may be null, counting from the error.
        let nullable_depth = steps.iter().rposition(|s| s.nullable).map(|i| i + 1);
        null_paths.push(nullable_depth.map(|depth| error.path[..depth].to_vec()));
    }
    for path in null_paths {
        match path {
            None => response.data = Value::Null,
            Some(path) => set_null(&mut response.data, &path),
        }
    }
}

/// The operation's root type and selection set.
fn operation<'d>(
    registry: &Registry,
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<(String, &'d Positioned<SelectionSet>)> {
    let operation = match name {
        Some(name) => document
            .operations
            .iter()
            .find(|(n, _)| n.is_some_and(|n: &Name| n.as_str() == name))?,
        None => document.operations.iter().next()?,
    }
    .1;
    let root = match operation.node.ty {
        OperationType::Query => Some(registry.query_type.clone()),
        OperationType::Mutation => registry.mutation_type.clone(),
        OperationType::Subscription => registry.subscription_type.clone(),
    }?;
    Some((root, &operation.node.selection_set))
}

/// One segment of an error's path, as the schema types it.
struct Step {
    nullable: bool,
    /// Where the field is selected in the document (for a field segment).
    field_pos: Option<Pos>,
}

struct Walker<'a> {
    registry: &'a Registry,
    document: &'a ExecutableDocument,
}

impl<'a> Walker<'a> {
    /// Types each segment of `path`, or `None` if the path does not follow
    /// the document (the error is then left as it is).
    fn steps(
        &self,
        root_type: &str,
        root: &'a Positioned<SelectionSet>,
        path: &[PathSegment],
    ) -> Option<Vec<Step>> {
        let mut steps = Vec::with_capacity(path.len());
        let mut parent_type = root_type.to_owned();
        let mut selections = vec![root];
        // The type of the current position, unwrapped as list indexes go.
        let mut current: Option<Type> = None;
        for segment in path {
            match segment {
                PathSegment::Field(key) => {
                    let fields = self.fields_with_key(&parent_type, &selections, key);
                    let (field_type_name, field_name, pos) =
                        fields.first().map(|f| (f.0.clone(), f.1.clone(), f.2))?;
                    let ty = match introspection_field_type(&field_name) {
                        Some(ty) => ty,
                        None => self
                            .registry
                            .types
                            .get(&field_type_name)?
                            .field_by_name(&field_name)
                            .and_then(|f| Type::new(&f.ty))?,
                    };
                    steps.push(Step {
                        nullable: ty.nullable,
                        field_pos: Some(pos),
                    });
                    selections = fields.iter().map(|f| f.3).collect();
                    current = Some(ty);
                }
                PathSegment::Index(_) => {
                    let BaseType::List(item) = current?.base else {
                        return None;
                    };
                    steps.push(Step {
                        nullable: item.nullable,
                        field_pos: None,
                    });
                    current = Some(*item);
                }
            }
            if let Some(Type {
                base: BaseType::Named(name),
                ..
            }) = &current
            {
                parent_type = name.to_string();
            }
        }
        Some(steps)
    }

    /// The fields of `selections` answered under `key`, with the type that
    /// declares each (a fragment's type condition, or the parent type), the
    /// field's name, its position and its own selection set.
    #[allow(clippy::type_complexity)]
    fn fields_with_key(
        &self,
        parent_type: &str,
        selections: &[&'a Positioned<SelectionSet>],
        key: &str,
    ) -> Vec<(String, String, Pos, &'a Positioned<SelectionSet>)> {
        let mut found = Vec::new();
        let mut visited_fragments = Vec::new();
        for set in selections {
            self.collect(parent_type, set, key, &mut found, &mut visited_fragments);
        }
        found
    }

    #[allow(clippy::type_complexity)]
    fn collect(
        &self,
        declaring_type: &str,
        set: &'a Positioned<SelectionSet>,
        key: &str,
        found: &mut Vec<(String, String, Pos, &'a Positioned<SelectionSet>)>,
        visited_fragments: &mut Vec<&'a str>,
    ) {
        for selection in &set.node.items {
            match &selection.node {
                Selection::Field(field) => {
                    if field.node.response_key().node.as_str() == key {
                        found.push((
                            declaring_type.to_owned(),
                            field.node.name.node.to_string(),
                            field.pos,
                            &field.node.selection_set,
                        ));
                    }
                }
                Selection::InlineFragment(fragment) => {
                    let condition = fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(declaring_type, |c| c.node.on.node.as_str());
                    self.collect(
                        condition,
                        &fragment.node.selection_set,
                        key,
                        found,
                        visited_fragments,
                    );
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    // Each fragment once: a document that passed validation
                    // has no cycles, but this must not depend on it.
                    if visited_fragments.contains(&name) {
                        continue;
                    }
                    visited_fragments.push(name);
                    if let Some(fragment) = self.document.fragments.get(name) {
                        self.collect(
                            fragment.node.type_condition.node.on.node.as_str(),
                            &fragment.node.selection_set,
                            key,
                            found,
                            visited_fragments,
                        );
                    }
                }
            }
        }
    }
}

/// The introspection fields as the specification types them (async-graphql's
/// registry has `__schema` nullable).
fn introspection_field_type(field: &str) -> Option<Type> {
    match field {
        "__schema" => Type::new("__Schema!"),
        "__type" => Type::new("__Type"),
        "__typename" => Type::new("String!"),
        _ => None,
    }
}

/// Sets the value at `path` to null. Containers on the way that are missing
/// or null (async-graphql's "every field failed") become empty objects, since
/// an error below them means they were resolved.
fn set_null(data: &mut Value, path: &[PathSegment]) {
    let mut current = data;
    for (i, segment) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        match segment {
            PathSegment::Field(key) => {
                if matches!(current, Value::Null) {
                    *current = Value::Object(Default::default());
                }
                let Value::Object(object) = current else {
                    return;
                };
                let entry = object.entry(Name::new(key)).or_insert(Value::Null);
                if last {
                    *entry = Value::Null;
                    return;
                }
                current = entry;
            }
            PathSegment::Index(index) => {
                let Value::List(items) = current else {
                    return;
                };
                let Some(item) = items.get_mut(*index) else {
                    return;
                };
                if last {
                    *item = Value::Null;
                    return;
                }
                current = item;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute};
    use async_graphql::{Object, Schema, ServerError, ServerResult, SimpleObject, Subscription};
    use std::sync::{Arc, Mutex};

    /// [`apply`] on every response, as the request pipeline does; the
    /// document is parsed again from the query text.
    struct SpecFieldErrors;

    impl ExtensionFactory for SpecFieldErrors {
        fn create(&self) -> Arc<dyn Extension> {
            Arc::new(SpecFieldErrorsExtension::default())
        }
    }

    #[derive(Default)]
    struct SpecFieldErrorsExtension {
        query: Mutex<Option<String>>,
    }

    #[async_trait::async_trait]
    impl Extension for SpecFieldErrorsExtension {
        async fn prepare_request(
            &self,
            ctx: &ExtensionContext<'_>,
            request: async_graphql::Request,
            next: async_graphql::extensions::NextPrepareRequest<'_>,
        ) -> ServerResult<async_graphql::Request> {
            *self.query.lock().unwrap() = Some(request.query.clone());
            next.run(ctx, request).await
        }

        async fn execute(
            &self,
            ctx: &ExtensionContext<'_>,
            operation_name: Option<&str>,
            next: NextExecute<'_>,
        ) -> Response {
            let mut response = next.run(ctx, operation_name).await;
            let query = self.query.lock().unwrap().clone().unwrap();
            let document = async_graphql::parser::parse_query(query).unwrap();
            apply(
                &ctx.schema_env.registry,
                &document,
                operation_name,
                &mut response,
            );
            response
        }
    }

    #[derive(SimpleObject)]
    struct Inner {
        ok: i32,
    }

    struct Child;

    #[Object]
    impl Child {
        async fn ok(&self) -> i32 {
            1
        }
        async fn fails(&self) -> async_graphql::Result<i32> {
            Err("no".into())
        }
        async fn maybe_fails(&self) -> async_graphql::Result<Option<i32>> {
            Err("no".into())
        }
        async fn items(&self) -> Vec<Child> {
            vec![Child, Child]
        }
        async fn maybe_items(&self) -> Option<Vec<Option<Child>>> {
            Some(vec![Some(Child)])
        }
    }

    struct Query;

    #[Object]
    impl Query {
        async fn required(&self) -> Child {
            Child
        }
        async fn optional(&self) -> Option<Child> {
            Some(Child)
        }
        async fn inner(&self) -> Inner {
            Inner { ok: 1 }
        }
    }

    struct Sub;

    #[Subscription]
    impl Sub {
        async fn tick(&self) -> futures_util::stream::Empty<i32> {
            futures_util::stream::empty()
        }
    }

    async fn run(query: &str) -> serde_json::Value {
        let schema = Schema::build(Query, async_graphql::EmptyMutation, Sub)
            .extension(SpecFieldErrors)
            .finish();
        serde_json::to_value(schema.execute(query).await).unwrap()
    }

    #[tokio::test]
    async fn a_failed_nullable_field_is_null() {
        let r = run("{ required { ok maybeFails } }").await;
        assert_eq!(
            r["data"],
            serde_json::json!({"required": {"ok": 1, "maybeFails": null}})
        );
        assert_eq!(
            r["errors"][0]["path"],
            serde_json::json!(["required", "maybeFails"])
        );
    }

    #[tokio::test]
    async fn a_failed_non_null_field_nulls_the_nearest_nullable_ancestor() {
        let r = run("{ optional { ok fails } inner { ok } }").await;
        assert_eq!(
            r["data"],
            serde_json::json!({"optional": null, "inner": {"ok": 1}})
        );
        let r = run("{ optional { fails } }").await;
        assert_eq!(r["data"], serde_json::json!({"optional": null}));
    }

    #[tokio::test]
    async fn with_no_nullable_ancestor_data_is_null() {
        let r = run("{ inner { ok } required { ok fails } }").await;
        assert_eq!(r["data"], serde_json::Value::Null, "{r}");
        // Through a list of non-null items, and through fragments.
        let r =
            run("{ required { ...F } } fragment F on Child { items { ... on Child { fails } } }")
                .await;
        assert_eq!(r["data"], serde_json::Value::Null, "{r}");
        assert_eq!(r["errors"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_nullable_list_item_absorbs_the_failure() {
        let r = run("{ required { maybeItems { ok fails } } }").await;
        assert_eq!(
            r["data"],
            serde_json::json!({"required": {"maybeItems": [null]}}),
            "{r}"
        );
    }

    /// Refuses one field the way the authentication extension does: an
    /// error with a path and no position.
    struct RefuseOptional;

    impl ExtensionFactory for RefuseOptional {
        fn create(&self) -> Arc<dyn Extension> {
            Arc::new(RefuseOptional)
        }
    }

    #[async_trait::async_trait]
    impl Extension for RefuseOptional {
        async fn resolve(
            &self,
            ctx: &ExtensionContext<'_>,
            info: async_graphql::extensions::ResolveInfo<'_>,
            next: async_graphql::extensions::NextResolve<'_>,
        ) -> ServerResult<Option<Value>> {
            if info.name == "optional" {
                let mut error = ServerError::new("refused", None);
                error.path = vec![PathSegment::Field(
                    info.alias.unwrap_or(info.name).to_owned(),
                )];
                return Err(error);
            }
            next.run(ctx, info).await
        }
    }

    #[tokio::test]
    async fn errors_from_extensions_get_locations_from_their_path() {
        let schema = Schema::build(Query, async_graphql::EmptyMutation, Sub)
            .extension(SpecFieldErrors)
            .extension(RefuseOptional)
            .finish();
        let r =
            serde_json::to_value(schema.execute("{\n  aliased: optional { ok } }").await).unwrap();
        assert_eq!(
            r["errors"][0]["locations"],
            serde_json::json!([{"line": 2, "column": 3}])
        );
        assert_eq!(r["data"], serde_json::json!({"aliased": null}), "{r}");
    }
}
