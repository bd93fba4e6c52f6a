//! Accounts in userdata.json, for servers without an identity provider:
//! the primary user at the top level (`username`, `hashedPassword`,
//! `sshKeys`), the others in `users`. Every change is applied by a rebuild.

use super::{
    Account, AccountInput, Changed, GroupInfo, UserKind, UserRepository, already_exists,
    primary_username, user_entries, user_not_found, validation,
};
use crate::domain::error::{Failure, Outcome};
use crate::domain::system::changes::UserdataChange;
use crate::domain::system::rebuild::{Accepted, ConfigChange, Rebuilds};
use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;

pub struct JsonUsers {
    /// userdata is read as declared through it, and written through it.
    rebuilds: Arc<Rebuilds>,
}

impl JsonUsers {
    pub fn new(rebuilds: Arc<Rebuilds>) -> JsonUsers {
        JsonUsers { rebuilds }
    }

    fn accounts(&self) -> Outcome<Vec<Account>> {
        let document = self.rebuilds.declared_userdata()?;
        Ok(accounts_in(&document))
    }
}

fn accounts_in(document: &Value) -> Vec<Account> {
    let primary = primary_username(document);
    let mut accounts: Vec<Account> = primary
        .map(|name| Account::plain(name, UserKind::Primary))
        .into_iter()
        .collect();
    accounts.extend(
        user_entries(document)
            .filter_map(|u| u.get("username").and_then(Value::as_str))
            .filter(|name| Some(*name) != primary)
            .map(|name| Account::plain(name, UserKind::Normal)),
    );
    accounts
}

fn no_groups_here() -> Failure {
    Failure::bad_input(
        "This server has no identity provider: groups cannot be set",
        "На этом сервере нет провайдера учётных записей: группы задать нельзя",
    )
}

/// Adds `username` to `userdata.users` (refused if the name is taken).
pub(crate) fn add_user(d: &mut Value, username: &str, hashed_password: &str) -> Outcome<()> {
    if accounts_in(d).iter().any(|a| a.username == username) {
        return Err(already_exists(username));
    }
    let object = d
        .as_object_mut()
        .ok_or_else(|| Failure::internal("adding a user", "userdata is not a JSON object"))?;
    let users = object.entry("users").or_insert_with(|| json!([]));
    if users.is_null() {
        *users = json!([]);
    }
    let users = users
        .as_array_mut()
        .ok_or_else(|| Failure::internal("adding a user", "userdata.users is not a list"))?;
    users.push(json!({ "username": username, "hashedPassword": hashed_password, "sshKeys": [] }));
    Ok(())
}

/// Sets the password hash of the primary user or of one in `users`.
pub(crate) fn set_password(d: &mut Value, username: &str, hashed_password: &str) -> Outcome<()> {
    let entry = if primary_username(d) == Some(username) {
        Some(d)
    } else {
        d.get_mut("users")
            .and_then(Value::as_array_mut)
            .and_then(|users| {
                users
                    .iter_mut()
                    .find(|u| u.get("username").and_then(Value::as_str) == Some(username))
            })
    };
    let entry = entry
        .and_then(Value::as_object_mut)
        .ok_or_else(|| user_not_found(username))?;
    entry.insert(
        "hashedPassword".into(),
        Value::String(hashed_password.to_owned()),
    );
    Ok(())
}

/// Removes `username` from `userdata.users` (refused if it is not there).
pub(crate) fn delete_user(d: &mut Value, username: &str) -> Outcome<()> {
    let users = d
        .get_mut("users")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| user_not_found(username))?;
    let before = users.len();
    users.retain(|u| u.get("username").and_then(Value::as_str) != Some(username));
    if users.len() == before {
        return Err(user_not_found(username));
    }
    Ok(())
}

#[async_trait]
impl UserRepository for JsonUsers {
    async fn list(&self) -> Outcome<Vec<Account>> {
        self.accounts()
    }

    async fn get(&self, username: &str) -> Outcome<Option<Account>> {
        Ok(self
            .accounts()?
            .into_iter()
            .find(|a| a.username == username))
    }

    async fn create(&self, input: &AccountInput) -> Outcome<Changed> {
        if input.directmemberof.as_ref().is_some_and(|g| !g.is_empty()) {
            return Err(no_groups_here());
        }
        let password = input
            .password
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                Failure::bad_input(
                    "A new user needs a password",
                    "Новому пользователю нужен пароль",
                )
            })?;
        let hash = validation::hash_password(password)?;
        let accepted = self
            .rebuilds
            .change(ConfigChange::from(UserdataChange::AddUser {
                username: input.username.clone(),
                hashed_password: hash,
            }))?;
        Ok(Changed {
            account: Account::plain(&input.username, UserKind::Normal),
            rebuild: Some(accepted),
        })
    }

    async fn update(&self, input: &AccountInput) -> Outcome<Changed> {
        let account = self
            .get(&input.username)
            .await?
            .ok_or_else(|| user_not_found(&input.username))?;
        if input.directmemberof.as_ref().is_some_and(|g| !g.is_empty()) {
            return Err(no_groups_here());
        }
        let Some(password) = input.password.as_deref().filter(|p| !p.is_empty()) else {
            // Nothing this repository keeps was asked to change.
            return Ok(Changed {
                account,
                rebuild: None,
            });
        };
        let hash = validation::hash_password(password)?;
        let accepted =
            self.rebuilds
                .change(ConfigChange::from(UserdataChange::SetUserPassword {
                    username: input.username.clone(),
                    hashed_password: hash,
                }))?;
        Ok(Changed {
            account,
            rebuild: Some(accepted),
        })
    }

    async fn delete(&self, username: &str) -> Outcome<Option<Accepted>> {
        let accepted = self
            .rebuilds
            .change(ConfigChange::from(UserdataChange::DeleteUser {
                username: username.to_owned(),
            }))?;
        Ok(Some(accepted))
    }

    async fn groups(&self) -> Outcome<Vec<GroupInfo>> {
        // userdata.json has no groups.
        Ok(Vec::new())
    }

    async fn password_reset_link(&self, _username: &str) -> Outcome<String> {
        Err(Failure::bad_input(
            "This server has no identity provider to issue reset links; set a new password with updateUser",
            "На этом сервере нет провайдера учётных записей для ссылок сброса; задайте новый пароль через updateUser",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_first_then_the_others() {
        let d = json!({"username": "owner", "users": [{"username": "bob"}, {"username": "owner"},
                       {"nousername": true}]});
        let names: Vec<_> = accounts_in(&d)
            .into_iter()
            .map(|a| (a.username, a.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("owner".to_owned(), UserKind::Primary),
                ("bob".to_owned(), UserKind::Normal)
            ]
        );
        assert!(accounts_in(&json!({})).is_empty());
    }
}
