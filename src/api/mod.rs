//! The GraphQL layer: translates between the app's schema and the domain.
//! No business rules live here.

pub mod auth;
pub mod document_limits;
pub mod errors;
pub mod field_errors;
pub mod http;
pub mod pipeline;
pub mod roots;
pub mod scalars;
pub mod time_limit;
pub mod types;
pub mod websocket;

use crate::app::App;
use async_graphql::{SDLExportOptions, Schema, SchemaBuilder};
use roots::{Mutation, Query, Subscription};
use std::sync::Arc;

pub type ApiSchema = Schema<Query, Mutation, Subscription>;

/// Query limits: the app's deepest operation nests 7 levels and GraphiQL's
/// introspection query 13; complexity counts one per selected field.
pub const MAX_DEPTH: usize = 16;
pub const MAX_COMPLEXITY: usize = 2000;

pub fn build_schema(app: Option<Arc<App>>) -> ApiSchema {
    schema_builder(app).finish()
}

/// The schema with its limits and extensions, not finished yet (the fuzz
/// targets add one that stops each request after validation).
pub fn schema_builder(app: Option<Arc<App>>) -> SchemaBuilder<Query, Mutation, Subscription> {
    let mut builder = Schema::build(Query::default(), Mutation::default(), Subscription)
        .register_output_type::<types::returns::MutationReturnInterface>()
        .register_output_type::<types::storage::StorageUsageInterface>()
        .register_output_type::<types::services::ConfigItem>()
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(pipeline::Pipeline::default());
    if let Some(app) = app {
        builder = builder.data(app);
    }
    builder
}

/// The SDL checked in as `schema.graphql`.
pub fn export_sdl() -> String {
    build_schema(None).sdl_with_options(SDLExportOptions::new().include_specified_by())
}
