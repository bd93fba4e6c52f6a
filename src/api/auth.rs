//! Who is asking, and what they may see.
//!
//! Default deny: every field of the root types and of the two namespaces
//! that mix public and private fields (`Api`, `ApiMutations`) needs a valid
//! token, except the few the app uses before it has one. Everything else in
//! the schema is reachable only through those fields.

use crate::app::App;
use crate::domain::tokens::Caller;
use async_graphql::extensions::{ExtensionContext, ResolveInfo};
use async_graphql::{Context, PathSegment, QueryPathNode, QueryPathSegment, Request, ServerError};
use std::any::TypeId;
use std::sync::Arc;

/// The requesting client's address, for throttling failed authentication.
#[derive(Debug, Clone)]
pub struct ClientId(pub String);

/// A websocket connection's token. It is checked again for every operation
/// on the socket and for every event of a subscription, so a token deleted
/// or refreshed meanwhile stops working at once there too.
#[derive(Debug, Clone)]
pub struct PresentedToken(pub String);

/// Whether the request's token is still valid, asked again later (by a
/// subscription before each event).
pub fn still_authorized(ctx: &Context<'_>) -> impl Fn() -> bool + Send + Sync + use<> {
    let app = app(ctx).clone();
    let token = ctx.data_opt::<PresentedToken>().map(|t| t.0.clone());
    move || {
        token
            .as_deref()
            .is_none_or(|token| app.tokens.authenticate(token).is_some())
    }
}

/// Fields open without a token: (parent type, field).
const PUBLIC_FIELDS: &[(&str, &str)] = &[
    ("Query", "api"),
    ("Api", "version"),
    ("Mutation", "api"),
    ("ApiMutations", "useRecoveryApiKey"),
    ("ApiMutations", "authorizeWithNewDeviceApiKey"),
    ("Mutation", "useRecoveryApiKey"),
    ("Mutation", "authorizeWithNewDeviceApiKey"),
];

/// Types where access is decided field by field.
const GUARDED_TYPES: &[&str] = &["Query", "Mutation", "Subscription", "Api", "ApiMutations"];

/// Whether a field may be resolved without a token. `__typename` is
/// harmless; `__schema` and `__type` (introspection) are for token holders.
pub fn is_public(parent_type: &str, field: &str) -> bool {
    field == "__typename"
        || !GUARDED_TYPES.contains(&parent_type)
        || PUBLIC_FIELDS.contains(&(parent_type, field))
}

pub fn app<'a>(ctx: &Context<'a>) -> &'a Arc<App> {
    ctx.data_unchecked::<Arc<App>>()
}

/// The authenticated caller, or the error the app gets without a token.
pub fn caller<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Caller> {
    ctx.data_opt::<Caller>()
        .ok_or_else(crate::api::errors::unauthenticated)
}

/// The response path of the field being resolved.
fn path_of(node: &QueryPathNode<'_>) -> Vec<PathSegment> {
    let mut path: Vec<PathSegment> = std::iter::once(node)
        .chain(node.parents())
        .map(|n| match n.segment {
            QueryPathSegment::Index(i) => PathSegment::Index(i),
            QueryPathSegment::Name(name) => PathSegment::Field(name.to_owned()),
        })
        .collect();
    path.reverse();
    path
}

/// Who the request is from, before anything runs: a websocket operation's
/// caller is who its connection's token belongs to now. Introspection is
/// for the owner's tools, so only with a token (the field check gives the
/// clear error; this is a second lock).
pub fn authenticate(ctx: &ExtensionContext<'_>, mut request: Request) -> (Request, bool) {
    if !request.data.contains_key(&TypeId::of::<Caller>())
        && let (Some(token), Some(app)) =
            (ctx.data_opt::<PresentedToken>(), ctx.data_opt::<Arc<App>>())
        && let Some(caller) = app.tokens.authenticate(&token.0)
    {
        request = request.data(caller);
    }
    if request.data.contains_key(&TypeId::of::<Caller>()) {
        (request, true)
    } else {
        (request.disable_introspection(), false)
    }
}

/// The error for a field that needs a token, asked without one.
pub fn refusal(info: &ResolveInfo<'_>) -> ServerError {
    let error = crate::api::errors::unauthenticated();
    let mut server_error = ServerError::new(error.message, None);
    server_error.extensions = error.extensions;
    // The position comes from the document (`field_errors`).
    server_error.path = path_of(info.path_node);
    server_error
}
