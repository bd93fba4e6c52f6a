//! `api`: version, devices and their tokens, recovery and new-device keys.

use crate::api::auth::{ClientId, app, caller};
use crate::api::errors::{Status, locale, say};
use crate::api::scalars::DateTime;
use crate::api::types::returns::{
    ApiKeyMutationReturn, DeviceApiTokenMutationReturn, GenericMutationReturn,
};
use crate::domain::error::Outcome;
use crate::domain::tokens::{Credential, Issued, TooManyAttempts};
use async_graphql::{Context, InputObject, Object, SimpleObject};

/// The SelfPrivacy API protocol level this daemon implements (the app
/// refuses servers older than 3.8.3).
pub const API_VERSION: &str = "3.8.3";

#[derive(Default)]
pub struct Api;

#[Object]
impl Api {
    async fn version(&self) -> &'static str {
        API_VERSION
    }

    async fn recovery_key(&self, ctx: &Context<'_>) -> async_graphql::Result<ApiRecoveryKeyStatus> {
        let status = app(ctx)
            .tokens
            .recovery_key_status()
            .map_err(|f| async_graphql::Error::new(f.message.get(locale(ctx))))?;
        Ok(ApiRecoveryKeyStatus {
            exists: status.exists,
            valid: status.valid,
            creation_date: status.created_at.map(Into::into),
            expiration_date: status.expires_at.map(Into::into),
            uses_left: status.uses_left.map(|n| n.clamp(0, i32::MAX as i64) as i32),
        })
    }

    async fn devices(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiDevice>> {
        let me = caller(ctx)?;
        Ok(app(ctx)
            .tokens
            .devices()
            .into_iter()
            .map(|d| ApiDevice {
                is_caller: d.name == me.device,
                name: d.name,
                creation_date: d.created_at.into(),
            })
            .collect())
    }
}

#[derive(SimpleObject)]
pub struct ApiDevice {
    pub name: String,
    pub creation_date: DateTime,
    pub is_caller: bool,
}

#[derive(SimpleObject)]
pub struct ApiRecoveryKeyStatus {
    pub exists: bool,
    pub valid: bool,
    pub creation_date: Option<DateTime>,
    pub expiration_date: Option<DateTime>,
    pub uses_left: Option<i32>,
}

#[derive(InputObject)]
pub struct RecoveryKeyLimitsInput {
    #[graphql(default)]
    pub expiration_date: Option<DateTime>,
    #[graphql(default)]
    pub uses: Option<i32>,
}

#[derive(InputObject)]
pub struct UseRecoveryKeyInput {
    pub key: String,
    pub device_name: String,
}

#[derive(InputObject)]
pub struct UseNewDeviceKeyInput {
    pub key: String,
    pub device_name: String,
}

fn key_return(
    ctx: &Context<'_>,
    outcome: Outcome<String>,
    en: &str,
    ru: &str,
) -> ApiKeyMutationReturn {
    match outcome {
        Ok(key) => ApiKeyMutationReturn::new(Status::ok(200, say(ctx, en, ru)), Some(key)),
        Err(failure) => ApiKeyMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
    }
}

fn token_return(
    ctx: &Context<'_>,
    outcome: Outcome<Issued>,
    en: &str,
    ru: &str,
) -> DeviceApiTokenMutationReturn {
    match outcome {
        Ok(issued) => DeviceApiTokenMutationReturn::new(
            Status::ok(200, say(ctx, en, ru)),
            Some(issued.secret),
        ),
        Err(failure) => {
            DeviceApiTokenMutationReturn::new(Status::failed(&failure, locale(ctx)), None)
        }
    }
}

fn status_return(
    ctx: &Context<'_>,
    outcome: Outcome<()>,
    en: &str,
    ru: &str,
) -> GenericMutationReturn {
    match outcome {
        Ok(()) => Status::ok(200, say(ctx, en, ru)).into(),
        Err(failure) => Status::failed(&failure, locale(ctx)).into(),
    }
}

/// Key use is open to anyone: each failure counts against the client and
/// is answered late once it has failed too often.
async fn throttled_key_use(
    ctx: &Context<'_>,
    credential: Credential,
    attempt: impl FnOnce() -> Outcome<Issued>,
) -> Outcome<Issued> {
    let app = app(ctx);
    let client = ctx
        .data_opt::<ClientId>()
        .map(|c| c.0.as_str())
        .unwrap_or("unknown");
    app.throttle
        .attempt(client, credential, attempt)
        .await
        .unwrap_or_else(|TooManyAttempts| Err(TooManyAttempts::failure()))
}

#[derive(Default)]
pub struct ApiMutations;

#[Object]
impl ApiMutations {
    pub async fn get_new_recovery_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] limits: Option<RecoveryKeyLimitsInput>,
    ) -> ApiKeyMutationReturn {
        let (expires, uses) = limits
            .map(|l| (l.expiration_date.map(|d| d.0), l.uses.map(i64::from)))
            .unwrap_or_default();
        let outcome = app(ctx).tokens.new_recovery_key(expires, uses);
        key_return(
            ctx,
            outcome,
            "Recovery key generated",
            "Ключ восстановления создан",
        )
    }

    pub async fn use_recovery_api_key(
        &self,
        ctx: &Context<'_>,
        input: UseRecoveryKeyInput,
    ) -> DeviceApiTokenMutationReturn {
        let outcome = throttled_key_use(ctx, Credential::RecoveryKey, || {
            app(ctx)
                .tokens
                .use_recovery_key(&input.key, &input.device_name)
        })
        .await;
        token_return(
            ctx,
            outcome,
            "Recovery key used",
            "Ключ восстановления использован",
        )
    }

    pub async fn refresh_device_api_token(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<DeviceApiTokenMutationReturn> {
        let outcome = app(ctx).tokens.refresh(caller(ctx)?);
        Ok(token_return(
            ctx,
            outcome,
            "Token refreshed",
            "Токен обновлён",
        ))
    }

    pub async fn delete_device_api_token(
        &self,
        ctx: &Context<'_>,
        device: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let outcome = app(ctx).tokens.delete_device(caller(ctx)?, &device);
        Ok(status_return(
            ctx,
            outcome,
            "Device deleted",
            "Устройство удалено",
        ))
    }

    pub async fn get_new_device_api_key(&self, ctx: &Context<'_>) -> ApiKeyMutationReturn {
        let outcome = app(ctx).tokens.new_device_key();
        key_return(
            ctx,
            outcome,
            "New device key generated",
            "Ключ для нового устройства создан",
        )
    }

    pub async fn invalidate_new_device_api_key(&self, ctx: &Context<'_>) -> GenericMutationReturn {
        let outcome = app(ctx).tokens.invalidate_new_device_key();
        status_return(
            ctx,
            outcome,
            "New device key deleted",
            "Ключ для нового устройства удалён",
        )
    }

    pub async fn authorize_with_new_device_api_key(
        &self,
        ctx: &Context<'_>,
        input: UseNewDeviceKeyInput,
    ) -> DeviceApiTokenMutationReturn {
        let outcome = throttled_key_use(ctx, Credential::NewDeviceKey, || {
            app(ctx)
                .tokens
                .use_new_device_key(&input.key, &input.device_name)
        })
        .await;
        token_return(ctx, outcome, "Device authorized", "Устройство авторизовано")
    }
}

#[derive(Default)]
pub struct ApiQueryRoot;

#[Object]
impl ApiQueryRoot {
    async fn api(&self) -> Api {
        Api
    }
}

/// `Mutation.api` and the deprecated flat twins of its mutations.
#[derive(Default)]
pub struct ApiMutationRoot;

#[Object]
impl ApiMutationRoot {
    #[graphql(deprecation = "Use `api.get_new_recovery_api_key` instead")]
    async fn get_new_recovery_api_key(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] limits: Option<RecoveryKeyLimitsInput>,
    ) -> async_graphql::Result<ApiKeyMutationReturn> {
        ApiMutations.get_new_recovery_api_key(ctx, limits).await
    }

    #[graphql(deprecation = "Use `api.use_recovery_api_key` instead")]
    async fn use_recovery_api_key(
        &self,
        ctx: &Context<'_>,
        input: UseRecoveryKeyInput,
    ) -> async_graphql::Result<DeviceApiTokenMutationReturn> {
        ApiMutations.use_recovery_api_key(ctx, input).await
    }

    #[graphql(deprecation = "Use `api.refresh_device_api_token` instead")]
    async fn refresh_device_api_token(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<DeviceApiTokenMutationReturn> {
        ApiMutations.refresh_device_api_token(ctx).await
    }

    #[graphql(deprecation = "Use `api.delete_device_api_token` instead")]
    async fn delete_device_api_token(
        &self,
        ctx: &Context<'_>,
        device: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        ApiMutations.delete_device_api_token(ctx, device).await
    }

    #[graphql(deprecation = "Use `api.get_new_device_api_key` instead")]
    async fn get_new_device_api_key(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<ApiKeyMutationReturn> {
        ApiMutations.get_new_device_api_key(ctx).await
    }

    #[graphql(deprecation = "Use `api.invalidate_new_device_api_key` instead")]
    async fn invalidate_new_device_api_key(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<GenericMutationReturn> {
        ApiMutations.invalidate_new_device_api_key(ctx).await
    }

    #[graphql(deprecation = "Use `api.authorize_with_new_device_api_key` instead")]
    async fn authorize_with_new_device_api_key(
        &self,
        ctx: &Context<'_>,
        input: UseNewDeviceKeyInput,
    ) -> async_graphql::Result<DeviceApiTokenMutationReturn> {
        ApiMutations
            .authorize_with_new_device_api_key(ctx, input)
            .await
    }

    async fn api(&self) -> ApiMutations {
        ApiMutations
    }
}
