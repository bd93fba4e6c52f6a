//! What the API adds to async-graphql's handling of every operation, on
//! HTTP and websockets, as one extension: async-graphql sends every field of
//! every answer through every extension's `resolve` hook, so one extension
//! costs a third of three.
//!
//! - Documents are parsed, measured ([`document_limits`]) and validated once
//!   per text: the app sends the same few operations over and over. They
//!   are kept in a small LRU, bounded in count and size.
//! - Without a valid token: no introspection, and only the public fields
//!   ([`auth`]).
//! - Field errors as the specification handles them ([`field_errors`]).

use super::{auth, document_limits, field_errors};
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest, NextResolve,
    NextValidation, ResolveInfo,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Value};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Documents kept: the app has a few dozen operations.
const KEPT_DOCUMENTS: NonZeroUsize = NonZeroUsize::new(64).unwrap();
/// Longer documents are prepared every time (the app's longest is about
/// 2 KiB), so the cache stays under a megabyte or so.
const MAX_KEPT_DOCUMENT_BYTES: usize = 8 * 1024;
/// Validation results kept per document: one per operation name asked.
const KEPT_VALIDATIONS: usize = 4;

pub struct Pipeline {
    documents: Arc<Mutex<LruCache<String, Arc<Prepared>>>>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            documents: Arc::new(Mutex::new(LruCache::new(KEPT_DOCUMENTS))),
        }
    }
}

impl ExtensionFactory for Pipeline {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(PipelineExtension {
            documents: self.documents.clone(),
            authenticated: AtomicBool::new(false),
            request: OnceLock::new(),
        })
    }
}

/// A document that parsed and is within the limits.
struct Prepared {
    document: ExecutableDocument,
    /// async-graphql's validation, by operation name, of requests without
    /// variables (with variables, it depends on their values).
    validated: Mutex<Vec<(Option<String>, ValidationResult)>>,
}

/// What one request's later steps need from its first.
struct RequestDocument {
    prepared: Arc<Prepared>,
    /// The operation name, when the validation may be kept.
    validation_key: Option<Option<String>>,
}

/// One request's state (async-graphql creates an extension per request).
struct PipelineExtension {
    documents: Arc<Mutex<LruCache<String, Arc<Prepared>>>>,
    authenticated: AtomicBool,
    request: OnceLock<RequestDocument>,
}

impl PipelineExtension {
    /// The request's document, parsed and measured, or kept from before;
    /// set on the request so async-graphql does not parse it again.
    fn prepare_document(&self, request: &mut Request) -> ServerResult<Arc<Prepared>> {
        let kept = self
            .documents
            .lock()
            .expect("documents lock")
            .get(request.query.as_str())
            .cloned();
        if let Some(prepared) = kept {
            request.set_parsed_query(prepared.document.clone());
            return Ok(prepared);
        }
        let document = request.parsed_query()?;
        document_limits::check(document)
            .map_err(|refusal| super::errors::request_error(refusal, "DOCUMENT_TOO_LARGE"))?;
        let prepared = Arc::new(Prepared {
            document: document.clone(),
            validated: Mutex::new(Vec::new()),
        });
        if request.query.len() <= MAX_KEPT_DOCUMENT_BYTES {
            self.documents
                .lock()
                .expect("documents lock")
                .put(request.query.clone(), prepared.clone());
        }
        Ok(prepared)
    }
}

#[async_trait::async_trait]
impl Extension for PipelineExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Measured before async-graphql's own checks: its recursion-depth
        // check walks fragment spreads without memoising.
        let prepared = self.prepare_document(&mut request)?;
        let validation_key = request
            .variables
            .is_empty()
            .then(|| request.operation_name.clone());
        let _ = self.request.set(RequestDocument {
            prepared,
            validation_key,
        });
        let (request, authenticated) = auth::authenticate(ctx, request);
        self.authenticated.store(authenticated, Ordering::Relaxed);
        next.run(ctx, request).await
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let Some((prepared, key)) = self
            .request
            .get()
            .and_then(|r| Some((&r.prepared, r.validation_key.as_ref()?)))
        else {
            return next.run(ctx).await;
        };
        let known = |validated: &Vec<(Option<String>, ValidationResult)>| {
            validated.iter().find(|(k, _)| k == key).map(|(_, r)| *r)
        };
        if let Some(result) = known(&prepared.validated.lock().expect("validated lock")) {
            return Ok(result);
        }
        let result = next.run(ctx).await?;
        let mut validated = prepared.validated.lock().expect("validated lock");
        if validated.len() < KEPT_VALIDATIONS && known(&validated).is_none() {
            validated.push((key.clone(), result));
        }
        Ok(result)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        if !response.errors.is_empty()
            && let Some(request) = self.request.get()
        {
            field_errors::apply(
                &ctx.schema_env.registry,
                &request.prepared.document,
                operation_name,
                &mut response,
            );
        }
        response
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if !self.authenticated.load(Ordering::Relaxed)
            && !auth::is_public(info.parent_type, info.name)
        {
            return Err(auth::refusal(&info));
        }
        next.run(ctx, info).await
    }
}
