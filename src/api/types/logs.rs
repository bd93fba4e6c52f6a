//! `logs`: the system journal, page by page.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions; the reference schema has only the two on `PaginatedEntries`.

use crate::api::auth::{caller, still_authorized};
use crate::api::errors::{code_of, locale};
use crate::api::scalars::DateTime;
use crate::domain::error::{Failure, FailureKind};
use crate::domain::logs::{self, LogFilter};
use crate::os::journal::JournalEntry;
use async_graphql::{Context, ErrorExtensions, Object, SimpleObject};
use futures_util::Stream;

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
        caller(ctx)?;
        let failed = |failure: Failure| field_error(&failure, ctx);
        let filter = LogFilter::new(filter_by_slice, filter_by_unit).map_err(failed)?;
        let page = logs::page(limit, up_cursor.as_deref(), down_cursor.as_deref(), &filter)
            .await
            .map_err(failed)?;
        Ok(PaginatedEntries {
            page_meta: LogsPageMeta {
                up_cursor: page.up_cursor,
                down_cursor: page.down_cursor,
            },
            entries: page.entries.into_iter().map(LogEntry::from).collect(),
        })
    }
}

impl From<JournalEntry> for LogEntry {
    fn from(entry: JournalEntry) -> Self {
        LogEntry {
            message: entry.message,
            timestamp: entry.timestamp.into(),
            priority: entry.priority,
            systemd_unit: entry.unit,
            systemd_slice: entry.slice,
            cursor: entry.cursor,
        }
    }
}

/// A refused or failed read as a field error with the app's status code.
fn field_error(failure: &Failure, ctx: &Context<'_>) -> async_graphql::Error {
    let code = code_of(failure.kind);
    let name = match failure.kind {
        FailureKind::BadInput => "BAD_REQUEST",
        _ => "INTERNAL_SERVER_ERROR",
    };
    async_graphql::Error::new(failure.message.get(locale(ctx)).to_owned()).extend_with(
        move |_, e| {
            e.set("code", name);
            e.set("status", code);
        },
    )
}

/// `Subscription.logEntries`: entries as journald stores them, filtered
/// like `paginated`. journalctl is stopped when the client goes away (the
/// stream is dropped) or its token stops being valid.
pub fn entry_stream(
    ctx: &Context<'_>,
    filter_by_slice: Option<String>,
    filter_by_unit: Option<String>,
) -> async_graphql::Result<impl Stream<Item = LogEntry> + use<>> {
    caller(ctx)?;
    let failed = |failure: Failure| field_error(&failure, ctx);
    let filter = LogFilter::new(filter_by_slice, filter_by_unit).map_err(failed)?;
    let follower = logs::follow(&filter).map_err(failed)?;
    let authorized = still_authorized(ctx);
    Ok(futures_util::stream::unfold(
        follower,
        move |mut follower| {
            let still = authorized();
            async move {
                if !still {
                    return None;
                }
                let entry = follower.next_entry().await?;
                Some((LogEntry::from(entry), follower))
            }
        },
    ))
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
