//! `services`: the installable services, their status, storage use,
//! configuration and backups; and the service mutations.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::auth::app;
use crate::api::errors::{Status, locale, say};
use crate::api::scalars::Json;
use crate::api::types::backup::SnapshotInfo;
use crate::api::types::jobs::ApiJob;
use crate::api::types::returns::{ServiceJobMutationReturn, ServiceMutationReturn};
use crate::api::types::storage::StorageVolume;
use crate::api::types::system::DnsRecord;
use crate::domain::error::Outcome;
use crate::domain::services::ServiceView;
use crate::domain::services::config::{Kind, Setting};
use crate::domain::services::definition::{Meta, SupportLevel};
use crate::domain::services::status::ServiceStatus;
use crate::domain::system::rebuild::{Accepted, Schedule};
use crate::os::systemd::UnitAction;
use async_graphql::parser::types::{Directive, Field, FragmentDefinition, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ContextSelectionSet, Enum, InputObject, Interface, Name, Object, OutputType,
    Positioned, ServerResult, SimpleObject, Value,
};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

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

// A service at one moment: the catalogue entry joined with userdata and
// systemd. Fields resolve from the domain view; the cyclic parts of the
// schema (storage usage -> service) are resolved on demand.
#[derive(Clone, Debug)]
pub struct Service(pub Arc<ServiceView>);

impl Service {
    fn meta(&self) -> &Meta {
        &self.0.definition.meta
    }
}

#[Object]
impl Service {
    async fn id(&self) -> &str {
        self.0.id()
    }

    async fn display_name(&self) -> &str {
        &self.meta().name
    }

    async fn description(&self) -> &str {
        &self.meta().description
    }

    // Base64 of the SVG text, as the Python API sends it.
    async fn svg_icon(&self) -> &str {
        &self.meta().svg_icon_base64
    }

    async fn is_movable(&self) -> bool {
        self.meta().is_movable
    }

    async fn is_required(&self) -> bool {
        self.meta().is_required
    }

    async fn is_enabled(&self) -> bool {
        self.0.enabled
    }

    async fn is_installed(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        self.0.installed.clone().map_err(|f| graphql_error(ctx, &f))
    }

    // Services from sp-modules are never system services.
    async fn is_system_service(&self) -> bool {
        false
    }

    async fn can_be_backed_up(&self) -> bool {
        self.meta().can_be_backed_up
    }

    async fn backup_description(&self) -> &str {
        &self.meta().backup_description
    }

    async fn status(&self) -> ServiceStatusEnum {
        self.0.status.into()
    }

    async fn url(&self) -> Option<String> {
        self.0.url()
    }

    async fn license(&self) -> Vec<LicenseType> {
        self.meta()
            .license
            .iter()
            .map(|l| LicenseType {
                deprecated: l.deprecated,
                free: l.free,
                full_name: l.full_name.clone(),
                redistributable: l.redistributable,
                short_name: l.short_name.clone(),
                spdx_id: l.spdx_id.clone(),
                url: l.url.clone(),
            })
            .collect()
    }

    async fn homepage(&self) -> Option<&str> {
        self.meta().homepage.as_deref()
    }

    async fn source_page(&self) -> Option<&str> {
        self.meta().source_page.as_deref()
    }

    async fn support_level(&self) -> SupportLevelEnum {
        match self.meta().support_level {
            SupportLevel::Normal => SupportLevelEnum::Normal,
            SupportLevel::Experimental => SupportLevelEnum::Experimental,
            SupportLevel::Deprecated => SupportLevelEnum::Deprecated,
            SupportLevel::Community => SupportLevelEnum::Community,
            SupportLevel::Unknown => SupportLevelEnum::Unknown,
        }
    }

    async fn dns_records(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<Vec<DnsRecord>>> {
        let records = self
            .0
            .dns_records
            .as_ref()
            .map_err(|f| graphql_error(ctx, f))?;
        Ok(Some(
            records
                .iter()
                .cloned()
                .map(|r| DnsRecord {
                    record_type: r.record_type.to_owned(),
                    name: r.name,
                    content: r.content,
                    ttl: r.ttl,
                    priority: None,
                    display_name: r.display_name,
                })
                .collect(),
        ))
    }

    // Until the first measurement (in the background) ends, `usedSpace`
    // is "0": the schema has no way to say "not measured yet".
    async fn storage_usage(&self) -> ServiceStorageUsage {
        let usage = self.0.storage.clone();
        ServiceStorageUsage {
            used_space: usage.bytes.to_string(),
            volume: usage.volume.map(|v| StorageVolume {
                total_space: v.filesystem.total.to_string(),
                free_space: v.filesystem.free.to_string(),
                used_space: v.filesystem.used.to_string(),
                root: v.is_root,
                name: v.filesystem.name,
                model: None,
                serial: None,
                r#type: v.filesystem.fstype,
            }),
            title: self.meta().name.clone(),
            service: Some(self.clone()),
        }
    }

    // The app has no int items: an int setting is a string item whose
    // regex admits only whole numbers (and its range is in the text).
    async fn configuration(&self, ctx: &Context<'_>) -> Option<Vec<ConfigItem>> {
        let settings = app(ctx).services.settings(&self.0);
        if settings.is_empty() {
            return None;
        }
        Some(settings.into_iter().map(config_item).collect())
    }

    async fn backup_snapshots(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<Vec<SnapshotInfo>>> {
        crate::api::types::backup::snapshots_of(ctx, self.0.id()).map(Some)
    }
}

fn graphql_error(
    ctx: &Context<'_>,
    failure: &crate::domain::error::Failure,
) -> async_graphql::Error {
    async_graphql::Error::new(failure.message.get(locale(ctx)))
}

fn config_item(setting: Setting) -> ConfigItem {
    let text = |v: &serde_json::Value| Setting::text(v);
    match setting.kind {
        Kind::Bool => ConfigItem::BoolConfigItem(BoolConfigItem {
            field_id: setting.id,
            description: setting.description,
            widget: setting.widget,
            r#type: "bool".into(),
            value: setting.value.as_bool().unwrap_or(false),
            default_value: setting.default.as_bool().unwrap_or(false),
        }),
        Kind::Enum { options } => ConfigItem::EnumConfigItem(EnumConfigItem {
            field_id: setting.id,
            description: setting.description,
            widget: setting.widget,
            r#type: "enum".into(),
            value: text(&setting.value),
            default_value: text(&setting.default),
            options,
        }),
        Kind::String { regex, .. } => ConfigItem::StringConfigItem(StringConfigItem {
            field_id: setting.id,
            description: setting.description,
            widget: setting.widget,
            r#type: "string".into(),
            value: text(&setting.value),
            default_value: text(&setting.default),
            regex,
        }),
        Kind::Int { min, max } => {
            let range = match (min, max) {
                (Some(a), Some(b)) => format!(" ({a}–{b})"),
                (Some(a), None) => format!(" (≥ {a})"),
                (None, Some(b)) => format!(" (≤ {b})"),
                (None, None) => String::new(),
            };
            ConfigItem::StringConfigItem(StringConfigItem {
                field_id: setting.id,
                description: format!("{}{range}", setting.description),
                widget: "text".into(),
                r#type: "string".into(),
                value: text(&setting.value),
                default_value: text(&setting.default),
                regex: Some(Setting::int_regex(min)),
            })
        }
    }
}

impl From<ServiceStatus> for ServiceStatusEnum {
    fn from(status: ServiceStatus) -> Self {
        match status {
            ServiceStatus::Active => ServiceStatusEnum::Active,
            ServiceStatus::Reloading => ServiceStatusEnum::Reloading,
            ServiceStatus::Inactive => ServiceStatusEnum::Inactive,
            ServiceStatus::Failed => ServiceStatusEnum::Failed,
            ServiceStatus::Activating => ServiceStatusEnum::Activating,
            ServiceStatus::Deactivating => ServiceStatusEnum::Deactivating,
            ServiceStatus::Off => ServiceStatusEnum::Off,
        }
    }
}

// Implements `StorageUsageInterface` (see storage.rs).
#[derive(SimpleObject, Clone, Debug)]
pub struct ServiceStorageUsage {
    pub used_space: String,
    pub volume: Option<StorageVolume>,
    pub title: String,
    pub service: Option<Service>,
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
    async fn all_services(&self, ctx: &Context<'_>) -> async_graphql::Result<ServiceList> {
        let services = app(ctx)
            .services
            .list_shared()
            .await
            .map_err(|f| async_graphql::Error::new(f.message.get(locale(ctx))))?;
        Ok(ServiceList(services))
    }
}

// `[Service!]!` whose items are resolved once per view and selection: a
// view is rebuilt whenever one of its inputs changes, so the same view
// asked the same way resolves to the same value. The app asks for the
// whole list every few seconds; this spares resolving it field by field.
pub struct ServiceList(pub Arc<Vec<Arc<ServiceView>>>);

// Fields whose values do not come from the service's view alone.
const OUTSIDE_THE_VIEW: &[&str] = &["backupSnapshots", "usages"];

impl OutputType for ServiceList {
    fn type_name() -> Cow<'static, str> {
        <Vec<Service> as OutputType>::type_name()
    }

    fn qualified_type_name() -> String {
        <Vec<Service> as OutputType>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        <Vec<Service> as OutputType>::create_type_info(registry)
    }

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        let key = SelectionKey::of(ctx, field);
        let kept = |view: &ServiceView| key.as_ref().and_then(|k| k.kept(view));
        let errors_before = ctx.query_env.errors.lock().map(|e| e.len()).ok();
        let mut resolving = Vec::new();
        for (index, view) in self.0.iter().enumerate() {
            if kept(view).is_none() {
                let ctx_index = ctx.with_index(index);
                let service = Service(view.clone());
                resolving.push(async move {
                    OutputType::resolve(&service, &ctx_index, field)
                        .await
                        .map(|value| (index, value))
                        .map_err(|e| ctx_index.set_error_path(e))
                });
            }
        }
        let resolved = futures_util::future::try_join_all(resolving).await?;
        // Kept only when nothing failed meanwhile: a value with errors
        // must bring its errors every time.
        let clean = errors_before.is_some()
            && ctx.query_env.errors.lock().map(|e| e.len()).ok() == errors_before;
        let mut values: Vec<Option<Value>> = vec![None; self.0.len()];
        for (index, value) in resolved {
            if let (Some(key), true) = (&key, clean) {
                key.keep(&self.0[index], value.clone());
            }
            values[index] = Some(value);
        }
        let values = values
            .into_iter()
            .zip(self.0.iter())
            .map(|(value, view)| {
                value
                    .or_else(|| kept(view).map(|kept| kept.value.clone()))
                    .unwrap_or(Value::Null)
            })
            .collect();
        Ok(Value::List(values))
    }
}

// What a field's selection asks for (names, aliases, arguments,
// directives, fragments, and the variables they may use), written out in
// full: two selections share a kept value only if they ask for the same.
// None when the selection reaches fields outside the view.
struct SelectionKey {
    text: String,
    // The memo's key; the text decides.
    hash: u64,
}

// A service's value for one selection.
struct KeptValue {
    selection: String,
    value: Value,
}

impl SelectionKey {
    fn of(ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> Option<SelectionKey> {
        let mut text = String::new();
        write_selection(
            &field.node.selection_set.node,
            &ctx.query_env.fragments,
            &mut text,
            0,
        )?;
        if !ctx.query_env.variables.is_empty() {
            write!(text, "$ {:?}", *ctx.query_env.variables).ok()?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        Some(SelectionKey {
            hash: hasher.finish(),
            text,
        })
    }

    fn kept(&self, view: &ServiceView) -> Option<Arc<KeptValue>> {
        view.memo
            .get::<KeptValue>(self.hash)
            .filter(|kept| kept.selection == self.text)
    }

    fn keep(&self, view: &ServiceView, value: Value) {
        let kept = KeptValue {
            selection: self.text.clone(),
            value,
        };
        view.memo.set(self.hash, Arc::new(kept));
    }
}

// Names are GraphQL names, and arguments and directives are written with
// `Debug` (strings quoted and escaped), so the text is unambiguous.
fn write_selection(
    set: &SelectionSet,
    fragments: &HashMap<Name, Positioned<FragmentDefinition>>,
    out: &mut String,
    depth: usize,
) -> Option<()> {
    // Validation refuses fragment cycles; a bound all the same.
    if depth > 64 {
        return None;
    }
    let directives = |d: &Vec<Positioned<Directive>>, out: &mut String| {
        if !d.is_empty() {
            write!(out, "@{d:?}").ok()
        } else {
            Some(())
        }
    };
    for selection in &set.items {
        match &selection.node {
            Selection::Field(f) => {
                let f = &f.node;
                if OUTSIDE_THE_VIEW.contains(&f.name.node.as_str()) {
                    return None;
                }
                out.push_str(f.name.node.as_str());
                if let Some(alias) = &f.alias {
                    write!(out, ":{}", alias.node).ok()?;
                }
                if !f.arguments.is_empty() {
                    write!(out, "({:?})", f.arguments).ok()?;
                }
                directives(&f.directives, out)?;
                out.push('{');
                write_selection(&f.selection_set.node, fragments, out, depth + 1)?;
                out.push_str("} ");
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let fragment = &fragments.get(name)?.node;
                write!(out, "...{name}").ok()?;
                directives(&spread.node.directives, out)?;
                write!(out, " on {}", fragment.type_condition.node.on.node).ok()?;
                directives(&fragment.directives, out)?;
                out.push('{');
                write_selection(&fragment.selection_set.node, fragments, out, depth + 1)?;
                out.push_str("} ");
            }
            Selection::InlineFragment(inline) => {
                let inline = &inline.node;
                out.push_str("...");
                if let Some(condition) = &inline.type_condition {
                    write!(out, " on {}", condition.node.on.node).ok()?;
                }
                directives(&inline.directives, out)?;
                out.push('{');
                write_selection(&inline.selection_set.node, fragments, out, depth + 1)?;
                out.push_str("} ");
            }
        }
    }
    Some(())
}

// ---- Mutation namespace ----

/// The result of a configuration change, saying when a rebuild applies it.
fn changed_return(
    ctx: &Context<'_>,
    outcome: Outcome<(ServiceView, Accepted)>,
    en: &str,
    ru: &str,
) -> ServiceMutationReturn {
    match outcome {
        Ok((view, accepted)) => {
            let (when_en, when_ru) = match accepted.schedule {
                Schedule::Now | Schedule::Shortly => (
                    "A system rebuild applies it shortly.",
                    "Пересборка системы применит это в ближайшее время.",
                ),
                Schedule::AfterCurrent => (
                    "Queued: applied by a rebuild after the one under way, and checked again then.",
                    "В очереди: применится пересборкой после текущей и тогда будет проверено снова.",
                ),
            };
            let message = say(ctx, &format!("{en} {when_en}"), &format!("{ru} {when_ru}"));
            ServiceMutationReturn::new(Status::ok(200, message), Some(Service(Arc::new(view))))
        }
        Err(failure) => ServiceMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
    }
}

fn service_return(
    ctx: &Context<'_>,
    outcome: Outcome<ServiceView>,
    en: &str,
    ru: &str,
) -> ServiceMutationReturn {
    match outcome {
        Ok(view) => ServiceMutationReturn::new(
            Status::ok(200, say(ctx, en, ru)),
            Some(Service(Arc::new(view))),
        ),
        Err(failure) => ServiceMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
    }
}

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
        let outcome = app(ctx).services.enable(&service_id).await;
        Ok(changed_return(
            ctx,
            outcome,
            "Service enabled.",
            "Сервис включён.",
        ))
    }

    pub async fn disable_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let outcome = app(ctx).services.disable(&service_id).await;
        Ok(changed_return(
            ctx,
            outcome,
            "Service disabled.",
            "Сервис выключен.",
        ))
    }

    pub async fn stop_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let outcome = app(ctx)
            .services
            .control(&service_id, UnitAction::Stop)
            .await;
        Ok(service_return(
            ctx,
            outcome,
            "Service stopped.",
            "Сервис остановлен.",
        ))
    }

    pub async fn start_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let outcome = app(ctx)
            .services
            .control(&service_id, UnitAction::Start)
            .await;
        Ok(service_return(
            ctx,
            outcome,
            "Service started.",
            "Сервис запущен.",
        ))
    }

    pub async fn restart_service(
        &self,
        ctx: &Context<'_>,
        service_id: String,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let outcome = app(ctx)
            .services
            .control(&service_id, UnitAction::Restart)
            .await;
        Ok(service_return(
            ctx,
            outcome,
            "Service restarted.",
            "Сервис перезапущен.",
        ))
    }

    pub async fn set_service_configuration(
        &self,
        ctx: &Context<'_>,
        input: SetServiceConfigurationInput,
    ) -> async_graphql::Result<ServiceMutationReturn> {
        let serde_json::Value::Object(changes) = input.configuration.0 else {
            let failure = crate::domain::error::Failure::bad_input(
                "The configuration must be an object of setting names and values",
                "Конфигурация должна быть объектом: имена настроек и значения",
            );
            return Ok(ServiceMutationReturn::new(
                Status::failed(&failure, locale(ctx)),
                None,
            ));
        };
        let outcome = app(ctx)
            .services
            .configure(&input.service_id, changes)
            .await;
        Ok(changed_return(
            ctx,
            outcome,
            "Service configuration updated.",
            "Настройки сервиса обновлены.",
        ))
    }

    pub async fn move_service(
        &self,
        ctx: &Context<'_>,
        input: MoveServiceInput,
    ) -> async_graphql::Result<ServiceJobMutationReturn> {
        let app = app(ctx);
        let outcome = app
            .storage
            .start_move(&app.service_locks, &input.service_id, &input.location)
            .await;
        let service = app
            .services
            .get(&input.service_id)
            .await
            .ok()
            .map(|view| Service(Arc::new(view)));
        Ok(match outcome {
            Ok(job) => ServiceJobMutationReturn::new(
                Status::ok(
                    200,
                    say(
                        ctx,
                        "Moving the service: follow the job",
                        "Сервис переносится: следите за задачей",
                    ),
                ),
                Some(ApiJob::from_job(&job, locale(ctx))),
                service,
            ),
            Err(failure) => {
                ServiceJobMutationReturn::new(Status::failed(&failure, locale(ctx)), None, service)
            }
        })
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
