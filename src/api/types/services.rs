//! `services`: the installable services, their status, storage use,
//! configuration and backups; and the service mutations.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::errors::unavailable;
use crate::api::scalars::Json;
use crate::api::types::backup::SnapshotInfo;
use crate::api::types::returns::{ServiceJobMutationReturn, ServiceMutationReturn};
use crate::api::types::storage::StorageVolume;
use crate::api::types::system::DnsRecord;
use async_graphql::{Context, Enum, InputObject, Interface, Object, SimpleObject};

const SERVICES: &str = "Service management";
const MOVING: &str = "Moving services between volumes";

// ---- Data types ----

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum ServiceStatusEnum {
    Active,
    Reloading,
    Inactive,
    Failed,
    Activating,
    Deactivating,
    Off,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum SupportLevelEnum {
    Normal,
    Experimental,
    Deprecated,
    Community,
    Unknown,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct LicenseType {
    pub deprecated: bool,
    pub free: bool,
    pub full_name: String,
    pub redistributable: bool,
    pub short_name: String,
    pub spdx_id: Option<String>,
    pub url: Option<String>,
}

// The schema is cyclic (service -> storageUsage -> service, service ->
// backupSnapshots -> service, volume -> usages -> volume). The data is
// finite: whoever fills it closes each cycle one level down (for example
// the service inside a service's own `storageUsage` carries no snapshots).
#[derive(SimpleObject, Clone, Debug)]
pub struct Service {
    pub id: String,
    pub display_name: String,
    pub description: String,
    pub svg_icon: String,
    pub is_movable: bool,
    pub is_required: bool,
    pub is_enabled: bool,
    pub is_installed: bool,
    pub is_system_service: bool,
    pub can_be_backed_up: bool,
    pub backup_description: String,
    pub status: ServiceStatusEnum,
    pub url: Option<String>,
    pub license: Vec<LicenseType>,
    pub homepage: Option<String>,
    pub source_page: Option<String>,
    pub support_level: SupportLevelEnum,
    pub dns_records: Option<Vec<DnsRecord>>,
    pub storage_usage: ServiceStorageUsage,
    pub configuration: Option<Vec<ConfigItem>>,
    pub backup_snapshots: Option<Vec<SnapshotInfo>>,
}

// Implements `StorageUsageInterface` (see storage.rs).
#[derive(SimpleObject, Clone, Debug)]
pub struct ServiceStorageUsage {
    pub used_space: String,
    pub volume: Option<StorageVolume>,
    pub title: String,
    pub service: Option<Box<Service>>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct StringConfigItem {
    pub field_id: String,
    pub description: String,
    pub widget: String,
    pub r#type: String,
    pub value: String,
    pub default_value: String,
    pub regex: Option<String>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct BoolConfigItem {
    pub field_id: String,
    pub description: String,
    pub widget: String,
    pub r#type: String,
    pub value: bool,
    pub default_value: bool,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct EnumConfigItem {
    pub field_id: String,
    pub description: String,
    pub widget: String,
    pub r#type: String,
    pub value: String,
    pub default_value: String,
    pub options: Vec<String>,
}

// Clippy reads the repeated `ty = "&String"` of distinct fields as
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(Interface, Clone, Debug)]
#[graphql(
    field(name = "field_id", ty = "&String"),
    field(name = "description", ty = "&String"),
    field(name = "widget", ty = "&String"),
    field(name = "type", ty = "&String")
)]
pub enum ConfigItem {
    StringConfigItem(StringConfigItem),
    BoolConfigItem(BoolConfigItem),
    EnumConfigItem(EnumConfigItem),
}

// ---- Inputs ----

#[derive(InputObject, Clone, Debug)]
pub struct SetServiceConfigurationInput {
    pub service_id: String,
    pub configuration: Json,
}

#[derive(InputObject, Clone, Debug)]
pub struct MoveServiceInput {
    pub service_id: String,
    pub location: String,
}

// ---- Query namespace ----

// `Query.services`.
#[derive(Default)]
pub struct Services;

#[Object]
impl Services {
    async fn all_services(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Service>> {
        let _ = ctx;
        Err(unavailable(SERVICES))
    }
}

// ---- Mutation namespace ----

// `Mutation.services`.
#[derive(Default)]
pub struct ServicesMutations;

#[Object]
impl ServicesMutations {
    pub async fn enable_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let _ = (ctx, service_id);
        Err(unavailable(SERVICES))
    }

    pub async fn disable_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let _ = (ctx, service_id);
        Err(unavailable(SERVICES))
    }

    pub async fn stop_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let _ = (ctx, service_id);
        Err(unavailable(SERVICES))
    }

    pub async fn start_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let _ = (ctx, service_id);
        Err(unavailable(SERVICES))
    }

    pub async fn restart_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let _ = (ctx, service_id);
        Err(unavailable(SERVICES))
    }

    pub async fn set_service_configuration(
        &self,
        ctx: &Context<'_>,
        input: SetServiceConfigurationInput,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let _ = (ctx, input);
        Err(unavailable(SERVICES))
    }

    pub async fn move_service(
        &self,
        ctx: &Context<'_>,
        input: MoveServiceInput,
    ) -> async_graphql::Result<ServiceJobMutationReturn> {
        let _ = (ctx, input);
        Err(unavailable(MOVING))
    }
}

// ---- Root pieces ----

#[derive(Default)]
pub struct ServicesQueryRoot;

#[Object]
impl ServicesQueryRoot {
    async fn services(&self) -> Services {
        Services
    }
}

#[derive(Default)]
pub struct ServicesMutationRoot;

#[Object]
impl ServicesMutationRoot {
    async fn services(&self) -> ServicesMutations {
        ServicesMutations
    }

    #[graphql(deprecation = "Use `services.enable_service` instead")]
    async fn enable_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        ServicesMutations.enable_service(ctx, service_id).await
    }

    #[graphql(deprecation = "Use `services.disable_service` instead")]
    async fn disable_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        ServicesMutations.disable_service(ctx, service_id).await
    }

    #[graphql(deprecation = "Use `services.stop_service` instead")]
    async fn stop_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        ServicesMutations.stop_service(ctx, service_id).await
    }

    #[graphql(deprecation = "Use `services.start_service` instead")]
    async fn start_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        ServicesMutations.start_service(ctx, service_id).await
    }

    #[graphql(deprecation = "Use `services.restart_service` instead")]
    async fn restart_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        ServicesMutations.restart_service(ctx, service_id).await
    }

    #[graphql(deprecation = "Use `services.move_service` instead")]
    async fn move_service(
        &self,
        ctx: &Context<'_>,
        input: MoveServiceInput,
    ) -> async_graphql::Result<ServiceJobMutationReturn> {
        ServicesMutations.move_service(ctx, input).await
    }
}
