//! `users` and `groups`: accounts, their SSH keys, groups, email passwords;
//! and the user mutations.
//!
//! Plain `//` comments on GraphQL items: doc comments would become schema
//! descriptions, which the reference schema does not have.

use crate::api::auth::app;
use crate::api::errors::{Status, locale, say};
use crate::api::scalars::DateTime;
use crate::api::types::returns::{
    GenericMutationReturn, PasswordResetLinkReturn, UserMutationReturn,
};
use crate::domain::users::{AccountInput, GroupInfo, UserKind, UserView};
use async_graphql::{Context, Enum, InputObject, Object, SimpleObject};

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

impl From<UserMutationInput> for AccountInput {
    fn from(input: UserMutationInput) -> Self {
        AccountInput {
            username: input.username,
            password: input.password,
            display_name: input.display_name,
            directmemberof: input.directmemberof,
        }
    }
}

impl User {
    /// The user with its email passwords' metadata (root has no mailbox).
    fn of(ctx: &Context<'_>, view: UserView) -> User {
        let metadata = (view.account.kind != UserKind::Root)
            .then(|| {
                app(ctx)
                    .email_passwords
                    .metadata(&view.account.username)
                    .ok()
            })
            .flatten()
            .map(|list| {
                list.into_iter()
                    .map(|m| EmailPasswordMetadata {
                        uuid: m.uuid,
                        display_name: m.display_name,
                        created_at: Some(DateTime(m.created_at)),
                        expires_at: m.expires_at.map(DateTime),
                        last_used: m.last_used.map(DateTime),
                    })
                    .collect()
            });
        User {
            email_password_metadata: metadata,
            ..User::from(view)
        }
    }
}

impl From<UserView> for User {
    fn from(view: UserView) -> Self {
        let account = view.account;
        User {
            username: account.username,
            user_type: match account.kind {
                UserKind::Root => UserType::Root,
                UserKind::Primary => UserType::Primary,
                UserKind::Normal => UserType::Normal,
            },
            ssh_keys: Some(view.ssh_keys),
            directmemberof: Some(account.directmemberof),
            memberof: Some(account.memberof),
            display_name: account.display_name,
            email: account.email,
            email_password_metadata: None,
        }
    }
}

impl From<GroupInfo> for Group {
    fn from(g: GroupInfo) -> Self {
        Group {
            name: g.name,
            group_class: Some(g.group_class),
            member: Some(g.member),
            memberof: Some(g.memberof),
            directmemberof: Some(g.directmemberof),
            spn: g.spn,
            description: g.description,
        }
    }
}

/// A query that could not be answered (Kanidm unreachable, userdata
/// unreadable): a GraphQL error with the reason and the app's code.
fn query_error(ctx: &Context<'_>, failure: crate::domain::error::Failure) -> async_graphql::Error {
    use async_graphql::ErrorExtensions;
    let code = crate::api::errors::code_of(failure.kind);
    async_graphql::Error::new(failure.message.get(locale(ctx)).to_owned())
        .extend_with(|_, e| e.set("code", code))
}

// ---- Query namespaces ----

// `Query.users`.
#[derive(Default)]
pub struct Users;

#[Object]
impl Users {
    async fn all_users(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<User>> {
        let users = app(ctx)
            .users
            .all()
            .await
            .map_err(|f| query_error(ctx, f))?;
        Ok(users.into_iter().map(|u| User::of(ctx, u)).collect())
    }

    async fn get_user(
        &self,
        ctx: &Context<'_>,
        username: String,
    ) -> async_graphql::Result<Option<User>> {
        let user = app(ctx)
            .users
            .get(&username)
            .await
            .map_err(|f| query_error(ctx, f))?;
        Ok(user.map(|u| User::of(ctx, u)))
    }
}

// `Query.groups`.
#[derive(Default)]
pub struct Groups;

#[Object]
impl Groups {
    async fn all_groups(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Group>> {
        let groups = app(ctx)
            .users
            .groups()
            .await
            .map_err(|f| query_error(ctx, f))?;
        Ok(groups.into_iter().map(Group::from).collect())
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
        let password_not_set = password_not_set(ctx, &user);
        Ok(match app(ctx).users.create(user.into()).await {
            Ok((view, _)) => UserMutationReturn::new(
                Status::ok(
                    201,
                    if password_not_set {
                        say(
                            ctx,
                            "User created; the password was not set: the user sets it with a password reset link",
                            "Пользователь создан; пароль не установлен: пользователь задаст его по ссылке сброса пароля",
                        )
                    } else {
                        say(ctx, "User created", "Пользователь создан")
                    },
                ),
                Some(User::of(ctx, view)),
            ),
            Err(failure) => UserMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
        })
    }

    pub async fn delete_user(
        &self,
        ctx: &Context<'_>,
        username: String,
    ) -> async_graphql::Result<GenericMutationReturn> {
        let outcome = app(ctx).users.delete(&username).await;
        if outcome.is_ok() {
            // A deleted user's mail passwords go with it (logged if not).
            let _ = app(ctx).email_passwords.forget_user(&username);
        }
        Ok(match outcome {
            Ok(_) => Status::ok(200, say(ctx, "User deleted", "Пользователь удалён")).into(),
            Err(failure) => Status::failed(&failure, locale(ctx)).into(),
        })
    }

    pub async fn update_user(
        &self,
        ctx: &Context<'_>,
        user: UserMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        let password_not_set = password_not_set(ctx, &user);
        Ok(match app(ctx).users.update(user.into()).await {
            Ok((view, _)) => UserMutationReturn::new(
                Status::ok(
                    200,
                    if password_not_set {
                        say(
                            ctx,
                            "User updated; the password was not changed: the user changes it with a password reset link",
                            "Пользователь изменён; пароль не изменён: пользователь изменит его по ссылке сброса пароля",
                        )
                    } else {
                        say(ctx, "User updated", "Пользователь изменён")
                    },
                ),
                Some(User::of(ctx, view)),
            ),
            Err(failure) => UserMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
        })
    }

    pub async fn add_ssh_key(
        &self,
        ctx: &Context<'_>,
        ssh_input: SshMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        let outcome = app(ctx)
            .users
            .add_ssh_key(&ssh_input.username, &ssh_input.ssh_key)
            .await;
        Ok(match outcome {
            Ok((view, _)) => UserMutationReturn::new(
                Status::ok(201, say(ctx, "SSH key added", "SSH-ключ добавлен")),
                Some(User::of(ctx, view)),
            ),
            Err(failure) => UserMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
        })
    }

    pub async fn remove_ssh_key(
        &self,
        ctx: &Context<'_>,
        ssh_input: SshMutationInput,
    ) -> async_graphql::Result<UserMutationReturn> {
        let outcome = app(ctx)
            .users
            .remove_ssh_key(&ssh_input.username, &ssh_input.ssh_key)
            .await;
        Ok(match outcome {
            Ok((view, _)) => UserMutationReturn::new(
                Status::ok(200, say(ctx, "SSH key removed", "SSH-ключ удалён")),
                Some(User::of(ctx, view)),
            ),
            Err(failure) => UserMutationReturn::new(Status::failed(&failure, locale(ctx)), None),
        })
    }

    pub async fn generate_password_reset_link(
        &self,
        ctx: &Context<'_>,
        username: String,
    ) -> async_graphql::Result<PasswordResetLinkReturn> {
        Ok(match app(ctx).users.password_reset_link(&username).await {
            Ok(link) => PasswordResetLinkReturn::new(
                Status::ok(200, say(ctx, "Link created", "Ссылка создана")),
                Some(link),
            ),
            Err(failure) => {
                PasswordResetLinkReturn::new(Status::failed(&failure, locale(ctx)), None)
            }
        })
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
        Ok(match app(ctx).email_passwords.delete(&username, &uuid) {
            Ok(()) => Status::ok(
                200,
                say(ctx, "Email password deleted", "Пароль для почты удалён"),
            )
            .into(),
            Err(failure) => Status::failed(&failure, locale(ctx)).into(),
        })
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

/// A password came with the account, and the repository does not set
/// passwords (Kanidm): the answer must say so.
fn password_not_set(ctx: &Context<'_>, user: &UserMutationInput) -> bool {
    user.password.as_deref().is_some_and(|p| !p.is_empty()) && !app(ctx).users.stores_passwords()
}
