//! An HTTP request body as the daemon receives it (a GraphQL request or a
//! batch, with variables), through the real schema: parsing, the daemon's
//! own document limits, the token extension and async-graphql's validation
//! with its depth and complexity limits. Execution is stopped after
//! validation (no resolver runs: they need the daemon's state), so what is
//! fuzzed is everything an unauthenticated client reaches first.
#![no_main]

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{BatchRequest, ServerError, ValidationResult};
use libfuzzer_sys::fuzz_target;
use selfprivacy_api::api::{ApiSchema, document_limits, schema_builder};
use std::sync::{Arc, OnceLock};

struct StopAfterValidation;

impl ExtensionFactory for StopAfterValidation {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(StopAfterValidation)
    }
}

#[async_trait::async_trait]
impl Extension for StopAfterValidation {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await?;
        Err(vec![ServerError::new("validated; not executed", None)])
    }
}

fn schema() -> &'static ApiSchema {
    static SCHEMA: OnceLock<ApiSchema> = OnceLock::new();
    SCHEMA.get_or_init(|| schema_builder(None).extension(StopAfterValidation).finish())
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    // The daemon's own measurement, on the text as a document.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(document) = async_graphql::parser::parse_query(text)
    {
        let _ = document_limits::check(&document);
    }
    // The body as async-graphql-axum reads it: JSON, one request or a batch.
    let Ok(batch) = serde_json::from_slice::<BatchRequest>(data) else {
        return;
    };
    let response = runtime().block_on(schema().execute_batch(batch));
    let responses = match response {
        async_graphql::BatchResponse::Single(one) => vec![one],
        async_graphql::BatchResponse::Batch(many) => many,
    };
    for response in responses {
        assert!(!response.errors.is_empty(), "execution was stopped");
        assert!(response.data == async_graphql::Value::Null);
    }
});
