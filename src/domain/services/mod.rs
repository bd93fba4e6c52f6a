//! Services: the catalogue of sp-modules joined with the server's state
//! (userdata: enabled, settings; systemd: unit states).

pub mod catalogue;
pub mod definition;
pub mod status;

use super::error::{Failure, FailureKind, Outcome};
use super::i18n::Text;
use crate::os::systemd::{JobOutcome, SystemdLink, UnitAction};
use crate::os::userdata::UserdataFile;
use catalogue::Catalogue;
use definition::Definition;
use serde_json::Value;
use status::ServiceStatus;
use std::sync::Arc;
use std::time::Duration;

/// A service as the app sees it at one moment.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub definition: Arc<Definition>,
    pub enabled: bool,
    pub status: ServiceStatus,
    /// `userdata.modules.<id>`: enable, location and option values.
    pub settings: serde_json::Map<String, Value>,
    /// `userdata.domain`.
    pub domain: Option<String>,
}

impl ServiceView {
    pub fn id(&self) -> &str {
        &self.definition.meta.id
    }

    /// An option's value: from userdata, else the definition's default.
    pub fn option_value(&self, name: &str) -> Option<Value> {
        self.settings
            .get(name)
            .cloned()
            .or_else(|| self.definition.options.get(name).map(|o| o.default.clone()))
            .filter(|v| !v.is_null())
    }

    /// `https://<subdomain>.<domain>` when the module shows a URL.
    pub fn url(&self) -> Option<String> {
        if !self.definition.meta.show_url {
            return None;
        }
        let option = self.definition.primary_subdomain_option()?;
        let subdomain = self.option_value(option)?;
        let subdomain = subdomain.as_str().filter(|s| !s.is_empty())?;
        let domain = self.domain.as_deref().filter(|d| !d.is_empty())?;
        Some(format!("https://{subdomain}.{domain}"))
    }
}

pub struct Services {
    catalogue: Catalogue,
    userdata: Arc<UserdataFile>,
    systemd: Arc<SystemdLink>,
    unit_timeout: Duration,
}

fn service_not_found() -> Failure {
    Failure::not_found("Service not found", "Сервис не найден")
}

impl Services {
    pub fn new(
        catalogue: Catalogue,
        userdata: Arc<UserdataFile>,
        systemd: Arc<SystemdLink>,
        unit_timeout: Duration,
    ) -> Self {
        Services {
            catalogue,
            userdata,
            systemd,
            unit_timeout,
        }
    }

    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Every service in the catalogue, with its state now.
    pub async fn list(&self) -> Outcome<Vec<ServiceView>> {
        let definitions = self.catalogue.definitions();
        self.views(&definitions).await
    }

    pub async fn get(&self, id: &str) -> Outcome<ServiceView> {
        let definition = self.catalogue.get(id).ok_or_else(service_not_found)?;
        let mut views = self.views(&[definition]).await?;
        Ok(views.remove(0))
    }

    async fn views(&self, definitions: &[Arc<Definition>]) -> Outcome<Vec<ServiceView>> {
        let userdata = self
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        let systemd = self
            .systemd
            .get()
            .await
            .map_err(|e| Failure::internal("connecting to systemd", e))?;
        let units: Vec<String> = definitions
            .iter()
            .flat_map(|d| d.meta.systemd_services.iter().cloned())
            .collect();
        let states = systemd.unit_states(&units).await;
        let domain = userdata["domain"].as_str().map(str::to_owned);
        Ok(definitions
            .iter()
            .map(|definition| {
                let settings = userdata["modules"][&definition.meta.id]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                let enabled = settings
                    .get("enable")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let status = ServiceStatus::worst(
                    definition
                        .meta
                        .systemd_services
                        .iter()
                        .map(|unit| ServiceStatus::of_unit(states.get(unit))),
                );
                ServiceView {
                    definition: definition.clone(),
                    enabled,
                    status,
                    settings,
                    domain: domain.clone(),
                }
            })
            .collect())
    }

    /// Starts, stops or restarts every unit of a service, waiting for
    /// systemd to finish, and reports what really happened.
    pub async fn control(&self, id: &str, action: UnitAction) -> Outcome<ServiceView> {
        let service = self.get(id).await?;
        if !service.enabled && action != UnitAction::Stop {
            return Err(Failure::conflict(
                format!(
                    "{} is disabled: enable it first",
                    service.definition.meta.name
                ),
                format!(
                    "{} выключен: сначала включите его",
                    service.definition.meta.name
                ),
            ));
        }
        let systemd = self
            .systemd
            .get()
            .await
            .map_err(|e| Failure::internal("connecting to systemd", e))?;
        for unit in &service.definition.meta.systemd_services {
            let outcome = systemd
                .run_job(action, unit, self.unit_timeout)
                .await
                .map_err(|e| unit_failure(action, unit, &e.to_string()))?;
            match outcome {
                JobOutcome::Done => {}
                JobOutcome::Failed(result) => return Err(unit_failure(action, unit, &result)),
                JobOutcome::TimedOut => {
                    let seconds = self.unit_timeout.as_secs();
                    return Err(Failure::new(
                        FailureKind::Internal,
                        Text::new(
                            format!(
                                "{unit} did not finish within {seconds} s; it may still be changing"
                            ),
                            format!(
                                "{unit} не завершил работу за {seconds} с; состояние ещё может меняться"
                            ),
                        ),
                    ));
                }
            }
        }
        self.get(id).await
    }
}

fn unit_failure(action: UnitAction, unit: &str, result: &str) -> Failure {
    let (en, ru) = match action {
        UnitAction::Start => ("start", "запустить"),
        UnitAction::Stop => ("stop", "остановить"),
        UnitAction::Restart => ("restart", "перезапустить"),
    };
    Failure::new(
        FailureKind::Internal,
        Text::new(
            format!("Could not {en} {unit}: {result}"),
            format!("Не удалось {ru} {unit}: {result}"),
        ),
    )
}
