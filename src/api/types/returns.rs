//! Mutation results. Every one shares `success`, `message` and `code`
//! (`MutationReturnInterface`); domain failures are reported here, as data.

use super::backup::BackupConfiguration;
use super::jobs::ApiJob;
use super::services::Service;
use super::users::User;
use crate::api::errors::Status;
use async_graphql::{Interface, SimpleObject};

/// Defines a result type: the shared `success`, `message`, `code`, then its
/// own fields, with a constructor from a `Status` and those fields.
macro_rules! mutation_return {
    ($(#[$meta:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        #[derive(SimpleObject, Clone)]
        $(#[$meta])*
        pub struct $name {
            pub success: bool,
            pub message: String,
            pub code: i32,
            $(pub $field: $ty,)*
        }

        impl $name {
            #[allow(clippy::too_many_arguments)]
            pub fn new(status: Status $(, $field: $ty)*) -> Self {
                $name {
                    success: status.success,
                    message: status.message,
                    code: status.code,
                    $($field,)*
                }
            }
        }
    };
}

mutation_return!(GenericMutationReturn {});
mutation_return!(ApiKeyMutationReturn { key: Option<String> });
mutation_return!(DeviceApiTokenMutationReturn { token: Option<String> });
mutation_return!(GenericJobMutationReturn { job: Option<ApiJob> });
mutation_return!(ServiceMutationReturn { service: Option<Service> });
mutation_return!(ServiceJobMutationReturn { job: Option<ApiJob>, service: Option<Service> });
mutation_return!(UserMutationReturn { user: Option<User> });
mutation_return!(GenericBackupConfigReturn { configuration: Option<BackupConfiguration> });
mutation_return!(TimezoneMutationReturn { timezone: Option<String> });
mutation_return!(AutoUpgradeSettingsMutationReturn {
    enable_auto_upgrade: bool,
    allow_reboot: bool
});
mutation_return!(
    #[graphql(name = "SSHSettingsMutationReturn")]
    SshSettingsMutationReturn {
        enable: bool,
        password_authentication: bool
    }
);
mutation_return!(PasswordResetLinkReturn { password_reset_link: Option<String> });

impl From<Status> for GenericMutationReturn {
    fn from(status: Status) -> Self {
        GenericMutationReturn::new(status)
    }
}

/// The deprecated flat mutations that once returned no job keep their old
/// result type: the job is dropped, the status kept.
impl From<GenericJobMutationReturn> for GenericMutationReturn {
    fn from(r: GenericJobMutationReturn) -> Self {
        GenericMutationReturn {
            success: r.success,
            message: r.message,
            code: r.code,
        }
    }
}

#[derive(Interface)]
#[graphql(
    field(name = "success", ty = "&bool"),
    field(name = "message", ty = "&String"),
    field(name = "code", ty = "&i32")
)]
#[allow(clippy::large_enum_variant)]
pub enum MutationReturnInterface {
    GenericMutationReturn(GenericMutationReturn),
    ApiKeyMutationReturn(ApiKeyMutationReturn),
    DeviceApiTokenMutationReturn(DeviceApiTokenMutationReturn),
    GenericJobMutationReturn(GenericJobMutationReturn),
    ServiceMutationReturn(ServiceMutationReturn),
    ServiceJobMutationReturn(ServiceJobMutationReturn),
    UserMutationReturn(UserMutationReturn),
    GenericBackupConfigReturn(GenericBackupConfigReturn),
    TimezoneMutationReturn(TimezoneMutationReturn),
    AutoUpgradeSettingsMutationReturn(AutoUpgradeSettingsMutationReturn),
    SshSettingsMutationReturn(SshSettingsMutationReturn),
    PasswordResetLinkReturn(PasswordResetLinkReturn),
}
