//! The schema's root types, merged from one piece per area.

use super::auth::{app, caller, still_authorized};
use super::errors::{Status, say};
use super::types::api::{ApiMutationRoot, ApiQueryRoot};
use super::types::backup::{BackupMutationRoot, BackupQueryRoot};
use super::types::jobs::{ApiJob, JobsMutationRoot, JobsQueryRoot};
use super::types::logs::{LogEntry, LogsQueryRoot};
use super::types::monitoring::MonitoringQueryRoot;
use super::types::returns::GenericMutationReturn;
use super::types::services::{ServicesMutationRoot, ServicesQueryRoot};
use super::types::storage::{StorageMutationRoot, StorageQueryRoot};
use super::types::system::{SystemMutationRoot, SystemQueryRoot};
use super::types::users::{UsersMutationRoot, UsersQueryRoot};
use crate::domain::jobs::run_test_job;
use async_graphql::{Context, MergedObject, Object, Subscription};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use tokio_stream::wrappers::BroadcastStream;

#[derive(MergedObject, Default)]
pub struct Query(
    ApiQueryRoot,
    SystemQueryRoot,
    LogsQueryRoot,
    UsersQueryRoot,
    StorageQueryRoot,
    JobsQueryRoot,
    ServicesQueryRoot,
    BackupQueryRoot,
    MonitoringQueryRoot,
);

#[derive(MergedObject, Default)]
pub struct Mutation(
    ApiMutationRoot,
    SystemMutationRoot,
    UsersMutationRoot,
    StorageMutationRoot,
    ServicesMutationRoot,
    JobsMutationRoot,
    BackupMutationRoot,
    TestMutationRoot,
);

#[derive(Default)]
pub struct TestMutationRoot;

#[Object]
impl TestMutationRoot {
    /// Starts a short job that walks from 0 to 100 %: a live check that
    /// jobs and `jobUpdates` reach the app (as in the Python API).
    async fn test_mutation(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        caller(ctx)?;
        let outcome = run_test_job(app(ctx).jobs.clone());
        Ok(match outcome {
            Ok(_) => Status::ok(
                200,
                say(ctx, "Test job started", "Тестовая задача запущена"),
            )
            .into(),
            Err(failure) => Status::failed(&failure, super::errors::locale(ctx)).into(),
        })
    }
}

#[derive(Default)]
pub struct Subscription;

#[Subscription]
impl Subscription {
    /// The whole job list: once at once, then after every change.
    async fn job_updates(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Vec<ApiJob>> + use<>> {
        caller(ctx)?;
        let authorized = still_authorized(ctx);
        let locale = super::errors::locale(ctx);
        let jobs = app(ctx).jobs.clone();
        // Subscribe before reading the current list, so no change falls between.
        let updates = BroadcastStream::new(jobs.subscribe());
        let current = jobs.list();
        let render = move |list: &[crate::domain::jobs::Job]| {
            list.iter()
                .map(|j| ApiJob::from_job(j, locale))
                .collect::<Vec<_>>()
        };
        let first = render(&current);
        let rest = updates.filter_map(move |update| {
            let item = match update {
                Ok(list) => Some(render(&list)),
                // A slow reader skipped some lists; the next one is whole anyway.
                Err(_) => Some(render(&jobs.list())),
            };
            async move { item }
        });
        // Ends as soon as the token is deleted or refreshed.
        Ok(stream::once(async move { first })
            .chain(rest)
            .take_while(move |_| futures_util::future::ready(authorized())))
    }

    /// Counts from 0 to 4, one number every half second: a connectivity
    /// check for subscriptions, as in the Python API.
    async fn count(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = i32> + use<>> {
        caller(ctx)?;
        let authorized = still_authorized(ctx);
        Ok(stream::iter(0..5)
            .then(|n| async move {
                if n > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                n
            })
            .take_while(move |_| futures_util::future::ready(authorized())))
    }

    async fn log_entries(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter_by_slice: Option<String>,
        #[graphql(default)] filter_by_unit: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = LogEntry> + use<>> {
        super::types::logs::entry_stream(ctx, filter_by_slice, filter_by_unit)
    }
}
