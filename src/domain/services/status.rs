//! A service's status: the worst state among its systemd units.

use crate::os::systemd::UnitState;

/// Ordered from best to worst, so `max` is the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServiceStatus {
    Active,
    Inactive,
    Deactivating,
    Activating,
    Reloading,
    Failed,
    Off,
}

impl ServiceStatus {
    /// One unit: OFF when systemd has no such unit loaded.
    pub fn of_unit(state: Option<&UnitState>) -> ServiceStatus {
        let Some(state) = state else {
            return ServiceStatus::Off;
        };
        if state.load_state != "loaded" {
            return ServiceStatus::Off;
        }
        match state.active_state.as_str() {
            "active" => ServiceStatus::Active,
            "inactive" => ServiceStatus::Inactive,
            "deactivating" => ServiceStatus::Deactivating,
            "activating" => ServiceStatus::Activating,
            "reloading" => ServiceStatus::Reloading,
            "failed" => ServiceStatus::Failed,
            _ => ServiceStatus::Off,
        }
    }

    /// Several units: the worst wins (OFF > FAILED > RELOADING >
    /// ACTIVATING > DEACTIVATING > INACTIVE > ACTIVE). No units: INACTIVE,
    /// as for a service that has nothing to run.
    pub fn worst(statuses: impl IntoIterator<Item = ServiceStatus>) -> ServiceStatus {
        statuses
            .into_iter()
            .max()
            .unwrap_or(ServiceStatus::Inactive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(load: &str, active: &str) -> UnitState {
        UnitState {
            load_state: load.into(),
            active_state: active.into(),
            sub_state: String::new(),
        }
    }

    #[test]
    fn the_worst_unit_decides() {
        use ServiceStatus::*;
        assert_eq!(ServiceStatus::of_unit(None), Off);
        assert_eq!(
            ServiceStatus::of_unit(Some(&unit("not-found", "inactive"))),
            Off
        );
        assert_eq!(
            ServiceStatus::of_unit(Some(&unit("loaded", "failed"))),
            Failed
        );
        assert_eq!(ServiceStatus::worst([Active, Inactive]), Inactive);
        assert_eq!(
            ServiceStatus::worst([Active, Activating, Deactivating]),
            Activating
        );
        assert_eq!(ServiceStatus::worst([Failed, Reloading]), Failed);
        assert_eq!(ServiceStatus::worst([Failed, Off]), Off);
        assert_eq!(ServiceStatus::worst([]), Inactive);
    }
}
