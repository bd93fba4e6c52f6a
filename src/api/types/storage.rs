//! `storage`: block volumes and what uses them; and the volume mutations.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::errors::unavailable;
use crate::api::types::returns::{GenericJobMutationReturn, GenericMutationReturn};
use crate::api::types::services::ServiceStorageUsage;
use async_graphql::{ComplexObject, Context, InputObject, Interface, Object, SimpleObject};

const VOLUMES: &str = "Storage volumes";

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
    async fn usages(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<StorageUsageInterface>> {
        let _ = ctx;
        Err(unavailable(VOLUMES))
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
        let _ = ctx;
        Err(unavailable(VOLUMES))
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
        let _ = (ctx, name);
        Err(unavailable(VOLUMES))
    }

    pub async fn mount_volume(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let _ = (ctx, name);
        Err(unavailable(VOLUMES))
    }

    pub async fn unmount_volume(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let _ = (ctx, name);
        Err(unavailable(VOLUMES))
    }

    pub async fn migrate_to_binds(
        &self,
        ctx: &Context<'_>,
        input: MigrateToBindsInput,
    ) -> async_graphql::Result<GenericJobMutationReturn> {
        let _ = (ctx, input);
        Err(unavailable(VOLUMES))
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
