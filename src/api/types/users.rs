//! `users` and `groups`: accounts, their SSH keys, groups, email passwords;
//! and the user mutations.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::errors::unavailable;
use crate::api::scalars::DateTime;
use crate::api::types::returns::{
    GenericMutationReturn, PasswordResetLinkReturn, UserMutationReturn,
};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};

const USERS: &str = "User management";
const EMAIL_PASSWORDS: &str = "Email passwords";

// ---- Data types ----

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum UserType {
    Normal,
    Primary,
    Root,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct EmailPasswordMetadata {
    pub uuid: String,
    pub display_name: String,
    pub created_at: Option<DateTime>,
    pub expires_at: Option<DateTime>,
    pub last_used: Option<DateTime>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct User {
    pub username: String,
    pub user_type: UserType,
    pub ssh_keys: Option<Vec<String>>,
    pub directmemberof: Option<Vec<String>>,
    pub memberof: Option<Vec<String>>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub email_password_metadata: Option<Vec<EmailPasswordMetadata>>,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Group {
    pub name: String,
    pub group_class: Option<Vec<String>>,
    pub member: Option<Vec<String>>,
    pub memberof: Option<Vec<String>>,
    pub directmemberof: Option<Vec<String>>,
    pub spn: Option<String>,
    pub description: Option<String>,
}

// ---- Inputs ----

#[derive(InputObject, Clone, Debug)]
pub struct UserMutationInput {
    pub username: String,
    #[graphql(default_with = "Some(Vec::new())")]
    pub directmemberof: Option<Vec<String>>,
    #[graphql(default)]
    pub password: Option<String>,
    #[graphql(default)]
    pub display_name: Option<String>,
}

#[derive(InputObject, Clone, Debug)]
pub struct SshMutationInput {
    pub username: String,
    pub ssh_key: String,
}

// ---- Query namespaces ----

// `Query.users`.
#[derive(Default)]
pub struct Users;

#[Object]
impl Users {
    async fn all_users(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<User>> {
        let _ = ctx;
        Err(unavailable(USERS))
    }

    async fn get_user(
        &self,
        ctx: &Context<'_>,
        username: String,
    ) -> async_graphql::Result<Option<User>> {
        let _ = (ctx, username);
        Err(unavailable(USERS))
    }
}

// `Query.groups`.
#[derive(Default)]
pub struct Groups;

#[Object]
impl Groups {
    async fn all_groups(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Group>> {
        let _ = ctx;
        Err(unavailable(USERS))
    }
}

// ---- Mutation namespaces ----

// `Mutation.users`.
#[derive(Default)]
pub struct UsersMutations;

#[Object]
impl UsersMutations {
    pub async fn create_user(
        &self,
        ctx: &Context<'_>,
        user: UserMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        let _ = (ctx, user);
        Err(unavailable(USERS))
    }

    pub async fn delete_user(
        &self,
        ctx: &Context<'_>,
        username: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let _ = (ctx, username);
        Err(unavailable(USERS))
    }

    pub async fn update_user(
        &self,
        ctx: &Context<'_>,
        user: UserMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        let _ = (ctx, user);
        Err(unavailable(USERS))
    }

    pub async fn add_ssh_key(
        &self,
        ctx: &Context<'_>,
        ssh_input: SshMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        let _ = (ctx, ssh_input);
        Err(unavailable(USERS))
    }

    pub async fn remove_ssh_key(
        &self,
        ctx: &Context<'_>,
        ssh_input: SshMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        let _ = (ctx, ssh_input);
        Err(unavailable(USERS))
    }

    pub async fn generate_password_reset_link(
        &self,
        ctx: &Context<'_>,
        username: String,
    ) -> async_graphql::Result<PasswordResetLinkReturn> {
        let _ = (ctx, username);
        Err(unavailable(USERS))
    }
}

// `Mutation.emailPasswordMetadataMutations`.
#[derive(Default)]
pub struct EmailPasswordsMetadataMutations;

#[Object]
impl EmailPasswordsMetadataMutations {
    pub async fn delete_email_password(
        &self,
        ctx: &Context<'_>,
        username: String,
        uuid: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let _ = (ctx, username, uuid);
        Err(unavailable(EMAIL_PASSWORDS))
    }
}

// ---- Root pieces ----

#[derive(Default)]
pub struct UsersQueryRoot;

#[Object]
impl UsersQueryRoot {
    async fn users(&self) -> Users {
        Users
    }

    async fn groups(&self) -> Groups {
        Groups
    }
}

#[derive(Default)]
pub struct UsersMutationRoot;

#[Object]
impl UsersMutationRoot {
    async fn users(&self) -> UsersMutations {
        UsersMutations
    }

    async fn email_password_metadata_mutations(&self) -> EmailPasswordsMetadataMutations {
        EmailPasswordsMetadataMutations
    }

    #[graphql(deprecation = "Use `users.create_user` instead")]
    async fn create_user(
        &self,
        ctx: &Context<'_>,
        user: UserMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        UsersMutations.create_user(ctx, user).await
    }

    #[graphql(deprecation = "Use `users.delete_user` instead")]
    async fn delete_user(
        &self,
        ctx: &Context<'_>,
        username: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        UsersMutations.delete_user(ctx, username).await
    }

    #[graphql(deprecation = "Use `users.update_user` instead")]
    async fn update_user(
        &self,
        ctx: &Context<'_>,
        user: UserMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        UsersMutations.update_user(ctx, user).await
    }

    #[graphql(deprecation = "Use `users.add_ssh_key` instead")]
    async fn add_ssh_key(
        &self,
        ctx: &Context<'_>,
        ssh_input: SshMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        UsersMutations.add_ssh_key(ctx, ssh_input).await
    }

    #[graphql(deprecation = "Use `users.remove_ssh_key` instead")]
    async fn remove_ssh_key(
        &self,
        ctx: &Context<'_>,
        ssh_input: SshMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        UsersMutations.remove_ssh_key(ctx, ssh_input).await
    }
}
