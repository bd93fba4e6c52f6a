//! One long operation per service at a time: a move, a backup and a
//! restore of the same service never overlap (each would read or replace
//! the data the other is working on).

use super::error::{Failure, Outcome};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What holds a service's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceOperation {
    Move,
    Backup,
    Restore,
}

impl ServiceOperation {
    fn describe(self) -> (&'static str, &'static str) {
        match self {
            ServiceOperation::Move => ("being moved", "переносится"),
            ServiceOperation::Backup => ("being backed up", "сохраняется в резервную копию"),
            ServiceOperation::Restore => ("being restored", "восстанавливается"),
        }
    }
}

#[derive(Default)]
pub struct ServiceLocks {
    held: Mutex<HashMap<String, ServiceOperation>>,
}

/// The right to work on one service's data; given back when dropped, so a
/// job that fails or panics never keeps the service locked.
#[must_use = "the service is unlocked as soon as the lease is dropped"]
pub struct ServiceLease {
    locks: Arc<ServiceLocks>,
    service: String,
    operation: ServiceOperation,
}

impl ServiceLease {
    pub fn service(&self) -> &str {
        &self.service
    }

    pub fn operation(&self) -> ServiceOperation {
        self.operation
    }
}

impl Drop for ServiceLease {
    fn drop(&mut self) {
        self.locks
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.service);
    }
}

impl ServiceLocks {
    /// Takes the service for `operation`, or refuses (409) naming what
    /// already runs on it. Never waits.
    pub fn try_acquire(
        self: &Arc<Self>,
        service: &str,
        operation: ServiceOperation,
    ) -> Outcome<ServiceLease> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = held.get(service) {
            let (en, ru) = running.describe();
            return Err(Failure::conflict(
                format!("Service {service} is {en} right now; try again when that is done"),
                format!("Сервис {service} сейчас {ru}; повторите, когда это закончится"),
            ));
        }
        held.insert(service.to_owned(), operation);
        Ok(ServiceLease {
            locks: self.clone(),
            service: service.to_owned(),
            operation,
        })
    }

    /// What runs on the service now, if anything.
    pub fn holder(&self, service: &str) -> Option<ServiceOperation> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::FailureKind;

    #[test]
    fn a_second_operation_on_a_service_is_refused_until_the_first_ends() {
        let locks = Arc::new(ServiceLocks::default());
        let lease = locks
            .try_acquire("nextcloud", ServiceOperation::Move)
            .unwrap();
        let refused = locks
            .try_acquire("nextcloud", ServiceOperation::Backup)
            .err()
            .unwrap();
        assert_eq!(refused.kind, FailureKind::Conflict);
        assert!(refused.message.en.contains("being moved"), "{refused}");
        // Another service is free meanwhile.
        let other = locks
            .try_acquire("gitea", ServiceOperation::Backup)
            .unwrap();
        assert_eq!(locks.holder("gitea"), Some(ServiceOperation::Backup));
        drop(lease);
        drop(other);
        assert_eq!(locks.holder("nextcloud"), None);
        let again = locks
            .try_acquire("nextcloud", ServiceOperation::Restore)
            .unwrap();
        assert_eq!(again.operation(), ServiceOperation::Restore);
        assert_eq!(again.service(), "nextcloud");
    }
}
