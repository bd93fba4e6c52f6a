//! Every request under a server-side time limit, on HTTP and websockets.
//!
//! A query or mutation that has not answered within the limit is answered
//! with a `TIMEOUT` error and its work is dropped. Subscriptions are not
//! limited: they stream for as long as the client listens.

use super::ApiSchema;
use async_graphql::futures_util::stream::{self, BoxStream, StreamExt};
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Data, Executor, Request, Response};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct TimeLimited {
    pub schema: ApiSchema,
    pub limit: Duration,
}

impl TimeLimited {
    fn timed_out(&self) -> Response {
        tracing::warn!(seconds = self.limit.as_secs(), "a request ran out of time");
        Response::from_errors(vec![super::errors::request_error(
            format!(
                "The request took longer than {} s and was stopped",
                self.limit.as_secs()
            ),
            "TIMEOUT",
        )])
    }
}

/// Whether the request is a subscription. The document parsed here is kept
/// in the request, so it is not parsed again; one that does not parse is
/// not a subscription (its execution reports the syntax error).
fn is_subscription(request: &mut Request) -> bool {
    let operation_name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    let ty = match &document.operations {
        DocumentOperations::Single(operation) => Some(operation.node.ty),
        DocumentOperations::Multiple(operations) => operation_name
            .as_deref()
            .and_then(|name| operations.get(name))
            .or_else(|| {
                (operations.len() == 1)
                    .then(|| operations.values().next())
                    .flatten()
            })
            .map(|operation| operation.node.ty),
    };
    ty == Some(OperationType::Subscription)
}

impl Executor for TimeLimited {
    async fn execute(&self, request: Request) -> Response {
        match tokio::time::timeout(self.limit, self.schema.execute(request)).await {
            Ok(response) => response,
            Err(_) => self.timed_out(),
        }
    }

    fn execute_stream(
        &self,
        mut request: Request,
        session_data: Option<Arc<Data>>,
    ) -> BoxStream<'static, Response> {
        let subscription = is_subscription(&mut request);
        let mut responses = Executor::execute_stream(&self.schema, request, session_data);
        if subscription {
            return responses;
        }
        // A query or mutation answers once.
        let this = self.clone();
        stream::once(async move {
            match tokio::time::timeout(this.limit, responses.next()).await {
                Ok(Some(response)) => response,
                Ok(None) => Response::new(async_graphql::Value::Null),
                Err(_) => this.timed_out(),
            }
        })
        .boxed()
    }
}
