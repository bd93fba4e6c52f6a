//! `storage`: block volumes and what uses them; and the volume mutations.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::auth::app;
use crate::api::errors::{Status, locale, say};
use crate::api::types::jobs::ApiJob;
use crate::api::types::returns::{GenericJobMutationReturn, GenericMutationReturn};
use crate::api::types::services::{Service, ServiceStorageUsage};
use crate::domain::error::{Failure, Outcome};
use crate::domain::storage::VolumeView;
use crate::domain::storage::binds::FIXED_SERVICES;
use crate::domain::system::rebuild::{Accepted, Schedule};
use async_graphql::{ComplexObject, Context, InputObject, Interface, Object, SimpleObject};
use std::sync::Arc;

impl From<&VolumeView> for StorageVolume {
    fn from(v: &VolumeView) -> Self {
        StorageVolume {
            total_space: v.total.to_string(),
            free_space: v.free.to_string(),
            used_space: v.used.to_string(),
            root: v.root,
            name: v.name.clone(),
            model: v.model.clone(),
            serial: v.serial.clone(),
            r#type: v.kind.clone(),
        }
    }
}

fn graphql_error(ctx: &Context<'_>, failure: &Failure) -> async_graphql::Error {
    async_graphql::Error::new(failure.message.get(locale(ctx)))
}

/// The result of a change a rebuild applies.
fn rebuild_return(
    ctx: &Context<'_>,
    outcome: Outcome<Accepted>,
    en: &str,
    ru: &str,
) -> GenericMutationReturn {
    match outcome {
        Ok(accepted) => {
            let (when_en, when_ru) = match accepted.schedule {
                Schedule::Now | Schedule::Shortly => (
                    "A system rebuild applies it shortly.",
                    "Пересборка системы применит это в ближайшее время.",
                ),
                Schedule::AfterCurrent => (
                    "Queued behind the rebuild under way.",
                    "В очереди за текущей пересборкой.",
                ),
            };
            Status::ok(
                200,
                say(ctx, &format!("{en} {when_en}"), &format!("{ru} {when_ru}")),
            )
            .into()
        }
        Err(failure) => Status::failed(&failure, locale(ctx)).into(),
    }
}

// ---- Data types ----

// Note on the cycle volume -> usages -> usage.volume -> usages ...: whoever
// fills these cuts it (a usage listed under a volume need not repeat the
// volume's own usages).
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct StorageVolume {
    pub total_space: String,
    pub free_space: String,
    pub used_space: String,
    pub root: bool,
    pub name: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub r#type: String,
}

#[ComplexObject]
impl StorageVolume {
    // What else lives on a volume comes with the storage capability.
    // Every enabled service whose data is on this volume, by the same
    // reading as its `storageUsage`.
    async fn usages(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<StorageUsageInterface>> {
        let services = &app(ctx).services;
        let views = services.list().await.map_err(|f| graphql_error(ctx, &f))?;
        let mut usages = Vec::new();
        for view in views.into_iter().filter(|v| v.enabled) {
            let usage = services.storage_use(&view).await;
            if usage.volume.as_ref().map(|v| v.filesystem.name.as_str()) != Some(&self.name) {
                continue;
            }
            usages.push(StorageUsageInterface::ServiceStorageUsage(
                ServiceStorageUsage {
                    used_space: usage.bytes.to_string(),
                    volume: Some(self.clone()),
                    title: view.definition.meta.name.clone(),
                    service: Some(Service(Arc::new(view))),
                },
            ));
        }
        Ok(usages)
    }
}

// Clippy reads the repeated `ty = "&String"` of distinct fields as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(Interface, Clone, Debug)]
#[graphql(
    field(name = "used_space", ty = "&String"),
    field(name = "volume", ty = "&Option<StorageVolume>"),
    field(name = "title", ty = "&String")
)]
pub enum StorageUsageInterface {
    ServiceStorageUsage(ServiceStorageUsage),
}

// ---- Inputs ----

#[derive(InputObject, Clone, Debug)]
pub struct MigrateToBindsInput {
    pub email_block_device: String,
    pub bitwarden_block_device: String,
    pub gitea_block_device: String,
    pub nextcloud_block_device: String,
    pub pleroma_block_device: String,
}

// ---- Query namespace ----

// `Query.storage`.
#[derive(Default)]
pub struct Storage;

#[Object]
impl Storage {
    async fn volumes(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<StorageVolume>> {
        let volumes = app(ctx)
            .storage
            .volumes()
            .await
            .map_err(|f| graphql_error(ctx, &f))?;
        Ok(volumes.iter().map(StorageVolume::from).collect())
    }
}

// ---- Mutation namespace ----

// `Mutation.storage`.
#[derive(Default)]
pub struct StorageMutations;

#[Object]
impl StorageMutations {
    pub async fn resize_volume(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        Ok(match app(ctx).storage.resize(&name).await {
            Ok(said) => Status::ok(
                200,
                say(
                    ctx,
                    &format!("Volume {name} resized: {said}"),
                    &format!("Размер тома {name} изменён: {said}"),
                ),
            )
            .into(),
            Err(failure) => Status::failed(&failure, locale(ctx)).into(),
        })
    }

    pub async fn mount_volume(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let outcome = app(ctx).storage.mount(&name).await;
        Ok(rebuild_return(
            ctx,
            outcome,
            &format!("Volume {name} will be mounted."),
            &format!("Том {name} будет подключён."),
        ))
    }

    pub async fn unmount_volume(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let outcome = app(ctx).storage.unmount(&name).await;
        Ok(rebuild_return(
            ctx,
            outcome,
            &format!("Volume {name} will be unmounted."),
            &format!("Том {name} будет отключён."),
        ))
    }

    pub async fn migrate_to_binds(
        &self,
        ctx: &Context<'_>,
        input: MigrateToBindsInput,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        // The app names the five services of older servers by field.
        let devices = [
            input.email_block_device,
            input.bitwarden_block_device,
            input.gitea_block_device,
            input.nextcloud_block_device,
            input.pleroma_block_device,
        ];
        let requested = FIXED_SERVICES
            .iter()
            .zip(devices)
            .map(|((_, service), device)| ((*service).to_owned(), device))
            .collect();
        let app = app(ctx);
        Ok(
            match app
                .storage
                .start_bind_migration(&app.service_locks, requested)
                .await
            {
                Ok(job) => GenericJobMutationReturn::new(
                    Status::ok(
                        200,
                        say(
                            ctx,
                            "Migration started: follow the job",
                            "Миграция начата: следите за задачей",
                        ),
                    ),
                    Some(ApiJob::from_job(&job, locale(ctx))),
                ),
                Err(failure) => {
                    GenericJobMutationReturn::new(Status::failed(&failure, locale(ctx)), None)
                }
            },
        )
    }
}

// ---- Root pieces ----

#[derive(Default)]
pub struct StorageQueryRoot;

#[Object]
impl StorageQueryRoot {
    async fn storage(&self) -> Storage {
        Storage
    }
}

#[derive(Default)]
pub struct StorageMutationRoot;

#[Object]
impl StorageMutationRoot {
    async fn storage(&self) -> StorageMutations {
        StorageMutations
    }

    #[graphql(deprecation = "Use `storage.resize_volume` instead")]
    async fn resize_volume(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        StorageMutations.resize_volume(ctx, name).await
    }

    #[graphql(deprecation = "Use `storage.mount_volume` instead")]
    async fn mount_volume(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        StorageMutations.mount_volume(ctx, name).await
    }

    #[graphql(deprecation = "Use `storage.unmount_volume` instead")]
    async fn unmount_volume(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        StorageMutations.unmount_volume(ctx, name).await
    }

    #[graphql(deprecation = "Use `storage.migrate_to_binds` instead")]
    async fn migrate_to_binds(
        &self,
        ctx: &Context<'_>,
        input: MigrateToBindsInput,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        StorageMutations.migrate_to_binds(ctx, input).await
    }
}
