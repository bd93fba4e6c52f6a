//! `logs`: the system journal, page by page.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions; the reference schema has only the two on `PaginatedEntries`.

use crate::api::errors::unavailable;
use crate::api::scalars::DateTime;
use async_graphql::{Context, Object, SimpleObject};

const LOGS: &str = "Logs";

// ---- Data types ----

#[derive(SimpleObject, Clone, Debug)]
pub struct LogEntry {
    pub message: String,
    pub timestamp: DateTime,
    pub priority: Option<i32>,
    pub systemd_unit: Option<String>,
    pub systemd_slice: Option<String>,
    pub cursor: String,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct LogsPageMeta {
    pub up_cursor: Option<String>,
    pub down_cursor: Option<String>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct PaginatedEntries {
    /// Metadata to aid in pagination.
    pub page_meta: LogsPageMeta,
    /// The list of log entries.
    pub entries: Vec<LogEntry>,
}

// ---- Query namespace ----

// `Query.logs`.
#[derive(Default)]
pub struct Logs;

#[Object]
impl Logs {
    async fn paginated(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: i32,
        #[graphql(default)] up_cursor: Option<String>,
        #[graphql(default)] down_cursor: Option<String>,
        #[graphql(default)] filter_by_slice: Option<String>,
        #[graphql(default)] filter_by_unit: Option<String>,
    ) -> async_graphql::Result<PaginatedEntries> {
        let _ = (
            ctx,
            limit,
            up_cursor,
            down_cursor,
            filter_by_slice,
            filter_by_unit,
        );
        Err(unavailable(LOGS))
    }
}

// ---- Root piece ----

#[derive(Default)]
pub struct LogsQueryRoot;

#[Object]
impl LogsQueryRoot {
    async fn logs(&self) -> Logs {
        Logs
    }
}
