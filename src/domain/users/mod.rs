//! Users and groups: accounts come from a repository (userdata.json, or
//! Kanidm on current servers); SSH keys live in userdata in both cases and
//! are applied by a rebuild.

pub mod email_passwords;
pub mod json;
pub mod kanidm;
pub mod validation;

use super::error::{Failure, FailureKind, Outcome};
use super::i18n::Text;
use super::system::changes::UserdataChange;
use super::system::rebuild::{Accepted, ConfigChange, Rebuilds};
use crate::os::userdata::UserdataFile;
use async_trait::async_trait;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// The account whose SSH keys are `ssh.rootKeys`.
pub const ROOT: &str = "root";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum UserKind {
    Root,
    /// The server's owner (userdata's top-level user; in Kanidm, a member
    /// of `sp.admins`).
    Primary,
    Normal,
}

/// An account as the repository knows it (SSH keys are added from
/// userdata by [`Users`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub username: String,
    pub kind: UserKind,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub directmemberof: Vec<String>,
    pub memberof: Vec<String>,
}

impl Account {
    pub fn plain(username: &str, kind: UserKind) -> Account {
        Account {
            username: username.to_owned(),
            kind,
            display_name: None,
            email: None,
            directmemberof: Vec::new(),
            memberof: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    pub name: String,
    pub group_class: Vec<String>,
    pub member: Vec<String>,
    pub memberof: Vec<String>,
    pub directmemberof: Vec<String>,
    pub spn: Option<String>,
    pub description: Option<String>,
}

/// What `createUser` and `updateUser` carry. The password is hashed (JSON)
/// or refused in favour of a reset link (Kanidm); never stored in clear.
#[derive(Clone, Default)]
pub struct AccountInput {
    pub username: String,
    pub password: Option<String>,
    pub display_name: Option<String>,
    /// `None`: leave group memberships as they are.
    pub directmemberof: Option<Vec<String>>,
}

impl std::fmt::Debug for AccountInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountInput")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("display_name", &self.display_name)
            .field("directmemberof", &self.directmemberof)
            .finish()
    }
}

/// What a change did: the account now, and the rebuild applying it, if
/// the change needs one.
pub struct Changed {
    pub account: Account,
    pub rebuild: Option<Accepted>,
}

/// Where accounts live. Root is not an account of the repository.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Whether a password given with an account is stored. Kanidm's are
    /// set by the person through a reset link, never by the API.
    fn stores_passwords(&self) -> bool {
        true
    }

    /// The primary user first, then the others.
    async fn list(&self) -> Outcome<Vec<Account>>;
    async fn get(&self, username: &str) -> Outcome<Option<Account>>;
    async fn create(&self, input: &AccountInput) -> Outcome<Changed>;
    async fn update(&self, input: &AccountInput) -> Outcome<Changed>;
    /// Removes the account (callers refuse root and the primary user).
    async fn delete(&self, username: &str) -> Outcome<Option<Accepted>>;
    async fn groups(&self) -> Outcome<Vec<GroupInfo>>;
    async fn password_reset_link(&self, username: &str) -> Outcome<String>;
}

/// A user as the app sees it: the account and its SSH keys.
#[derive(Debug, Clone)]
pub struct UserView {
    pub account: Account,
    pub ssh_keys: Vec<String>,
}

pub struct Users {
    repository: Arc<dyn UserRepository>,
    /// userdata is read as declared through it, and written through it.
    rebuilds: Arc<Rebuilds>,
    /// `/etc/passwd`: new users must not clash with system accounts.
    passwd_file: PathBuf,
}

impl Users {
    /// Whether a password sent with `createUser`/`updateUser` is set.
    pub fn stores_passwords(&self) -> bool {
        self.repository.stores_passwords()
    }
}

pub fn user_not_found(username: &str) -> Failure {
    Failure::not_found(
        format!("User {username} not found"),
        format!("Пользователь {username} не найден"),
    )
}

impl Users {
    pub fn new(
        repository: Arc<dyn UserRepository>,
        rebuilds: Arc<Rebuilds>,
        passwd_file: PathBuf,
    ) -> Users {
        Users {
            repository,
            rebuilds,
            passwd_file,
        }
    }

    fn read_userdata(&self) -> Outcome<Value> {
        self.rebuilds.declared_userdata()
    }

    fn view(&self, account: Account, document: &Value) -> UserView {
        let ssh_keys = ssh_keys_of(document, &account.username, account.kind);
        UserView { account, ssh_keys }
    }

    pub async fn all(&self) -> Outcome<Vec<UserView>> {
        let accounts = self.repository.list().await?;
        let document = self.read_userdata()?;
        Ok(accounts
            .into_iter()
            .map(|account| self.view(account, &document))
            .collect())
    }

    pub async fn get(&self, username: &str) -> Outcome<Option<UserView>> {
        let document = self.read_userdata()?;
        if username == ROOT {
            return Ok(Some(
                self.view(Account::plain(ROOT, UserKind::Root), &document),
            ));
        }
        let account = self.repository.get(username).await?;
        Ok(account.map(|account| self.view(account, &document)))
    }

    async fn existing(&self, username: &str) -> Outcome<UserView> {
        self.get(username)
            .await?
            .ok_or_else(|| user_not_found(username))
    }

    pub async fn create(&self, input: AccountInput) -> Outcome<(UserView, Option<Accepted>)> {
        validation::check_username(&input.username)?;
        if self.repository.get(&input.username).await?.is_some() {
            return Err(already_exists(&input.username));
        }
        if validation::system_users(&self.passwd_file)?.contains(&input.username) {
            return Err(Failure::bad_input(
                format!("{} is a system account of the server", input.username),
                format!("{} — системная учётная запись сервера", input.username),
            ));
        }
        let changed = self.repository.create(&input).await?;
        Ok((
            UserView {
                account: changed.account,
                ssh_keys: Vec::new(),
            },
            changed.rebuild,
        ))
    }

    pub async fn update(&self, input: AccountInput) -> Outcome<(UserView, Option<Accepted>)> {
        if input.username == ROOT {
            return Err(Failure::bad_input(
                "The root user cannot be changed here",
                "Пользователя root здесь изменить нельзя",
            ));
        }
        let current = self.existing(&input.username).await?;
        let changed = self.repository.update(&input).await?;
        Ok((
            UserView {
                account: changed.account,
                ssh_keys: current.ssh_keys,
            },
            changed.rebuild,
        ))
    }

    pub async fn delete(&self, username: &str) -> Outcome<Vec<Accepted>> {
        let user = self.existing(username).await?;
        if user.account.kind != UserKind::Normal {
            return Err(Failure::bad_input(
                format!("{username} is the server's root or primary user and cannot be deleted"),
                format!("{username} — root или основной пользователь сервера, его нельзя удалить"),
            ));
        }
        let mut rebuilds = Vec::new();
        if let Some(accepted) = self.repository.delete(username).await? {
            rebuilds.push(accepted);
        }
        // Kanidm users keep their SSH keys in userdata: remove them too.
        let document = self.read_userdata()?;
        if has_user_entry(&document, username) {
            rebuilds.push(self.rebuilds.change(ConfigChange::from(
                UserdataChange::ForgetUserEntry {
                    username: username.to_owned(),
                },
            ))?);
        }
        Ok(rebuilds)
    }

    pub async fn add_ssh_key(&self, username: &str, key: &str) -> Outcome<(UserView, Accepted)> {
        let key = validation::check_ssh_key(key)?;
        let mut user = self.existing(username).await?;
        let identity = validation::key_identity(&key);
        if user
            .ssh_keys
            .iter()
            .any(|k| validation::key_identity(k) == identity)
        {
            return Err(Failure::conflict(
                "This SSH key is already there",
                "Этот SSH-ключ уже добавлен",
            ));
        }
        let accepted = self
            .rebuilds
            .change(ConfigChange::from(UserdataChange::AddSshKey {
                username: username.to_owned(),
                kind: user.account.kind,
                key: key.clone(),
            }))?;
        user.ssh_keys.push(key);
        Ok((user, accepted))
    }

    pub async fn remove_ssh_key(&self, username: &str, key: &str) -> Outcome<(UserView, Accepted)> {
        let mut user = self.existing(username).await?;
        let identity = validation::key_identity(key);
        if !user
            .ssh_keys
            .iter()
            .any(|k| validation::key_identity(k) == identity)
        {
            return Err(Failure::not_found(
                "No such SSH key for this user",
                "У этого пользователя нет такого SSH-ключа",
            ));
        }
        let accepted = self
            .rebuilds
            .change(ConfigChange::from(UserdataChange::RemoveSshKey {
                username: username.to_owned(),
                kind: user.account.kind,
                key: key.to_owned(),
            }))?;
        user.ssh_keys
            .retain(|k| validation::key_identity(k) != identity);
        Ok((user, accepted))
    }

    pub async fn groups(&self) -> Outcome<Vec<GroupInfo>> {
        self.repository.groups().await
    }

    pub async fn password_reset_link(&self, username: &str) -> Outcome<String> {
        if username == ROOT {
            return Err(user_not_found(username));
        }
        self.repository.password_reset_link(username).await
    }
}

pub fn already_exists(username: &str) -> Failure {
    Failure::conflict(
        format!("User {username} already exists"),
        format!("Пользователь {username} уже существует"),
    )
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `userdata.username`: the primary user in JSON mode.
pub fn primary_username(document: &Value) -> Option<&str> {
    document
        .get("username")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// `userdata.users[]` entries.
pub fn user_entries(document: &Value) -> impl Iterator<Item = &Value> {
    document
        .get("users")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn has_user_entry(document: &Value, username: &str) -> bool {
    user_entries(document).any(|u| u.get("username").and_then(Value::as_str) == Some(username))
}

pub(crate) fn remove_user_entry(document: &mut Value, username: &str) {
    if let Some(users) = document.get_mut("users").and_then(Value::as_array_mut) {
        users.retain(|u| u.get("username").and_then(Value::as_str) != Some(username));
    }
}

fn ssh_keys_of(document: &Value, username: &str, kind: UserKind) -> Vec<String> {
    if kind == UserKind::Root {
        return strings(document.get("ssh").and_then(|s| s.get("rootKeys")));
    }
    if primary_username(document) == Some(username) {
        return strings(document.get("sshKeys"));
    }
    user_entries(document)
        .find(|u| u.get("username").and_then(Value::as_str) == Some(username))
        .map(|u| strings(u.get("sshKeys")))
        .unwrap_or_default()
}

fn not_an_object(what: &str) -> Failure {
    Failure::new(
        FailureKind::Internal,
        Text::new(
            format!("userdata.json: {what} is not what the daemon expects; fix the file by hand"),
            format!("userdata.json: {what} имеет неожиданный вид; исправьте файл вручную"),
        ),
    )
}

/// An object member, created empty if missing.
fn object_member<'a>(value: &'a mut Value, key: &str, empty: Value) -> Outcome<&'a mut Value> {
    let object = value.as_object_mut().ok_or_else(|| not_an_object(key))?;
    let member = object.entry(key).or_insert(empty.clone());
    if member.is_null() {
        *member = empty;
    }
    Ok(member)
}

/// Adds `key` to the user's keys (refused if a key with its identity is
/// there already).
pub(crate) fn add_ssh_key(d: &mut Value, username: &str, kind: UserKind, key: &str) -> Outcome<()> {
    let identity = validation::key_identity(key);
    let keys = ssh_keys_mut(d, username, kind)?;
    if keys
        .iter()
        .any(|k| k.as_str().map(validation::key_identity).as_deref() == Some(&identity))
    {
        return Err(Failure::conflict(
            "This SSH key is already there",
            "Этот SSH-ключ уже добавлен",
        ));
    }
    keys.push(Value::String(key.to_owned()));
    Ok(())
}

/// Removes the user's keys with the identity of `key` (refused if none).
pub(crate) fn remove_ssh_key(
    d: &mut Value,
    username: &str,
    kind: UserKind,
    key: &str,
) -> Outcome<()> {
    let wanted = validation::key_identity(key);
    let keys = ssh_keys_mut(d, username, kind)?;
    let before = keys.len();
    keys.retain(|k| k.as_str().map(validation::key_identity).as_deref() != Some(&wanted));
    if keys.len() == before {
        return Err(Failure::not_found(
            "No such SSH key for this user",
            "У этого пользователя нет такого SSH-ключа",
        ));
    }
    Ok(())
}

/// The list a user's SSH keys are kept in; a Kanidm user without an entry
/// in `users` gets one holding only its keys.
fn ssh_keys_mut<'a>(
    document: &'a mut Value,
    username: &str,
    kind: UserKind,
) -> Outcome<&'a mut Vec<Value>> {
    let list = if kind == UserKind::Root {
        let ssh = object_member(document, "ssh", Value::Object(Default::default()))?;
        object_member(ssh, "rootKeys", Value::Array(Vec::new()))?
    } else if primary_username(document) == Some(username) {
        object_member(document, "sshKeys", Value::Array(Vec::new()))?
    } else {
        let users = object_member(document, "users", Value::Array(Vec::new()))?
            .as_array_mut()
            .ok_or_else(|| not_an_object("users"))?;
        let index = match users
            .iter()
            .position(|u| u.get("username").and_then(Value::as_str) == Some(username))
        {
            Some(index) => index,
            None => {
                users.push(serde_json::json!({ "username": username, "sshKeys": [] }));
                users.len() - 1
            }
        };
        object_member(&mut users[index], "sshKeys", Value::Array(Vec::new()))?
    };
    list.as_array_mut().ok_or_else(|| not_an_object("sshKeys"))
}

/// The users of this server, from the configured repository.
pub fn open(
    config: &crate::config::Config,
    userdata: Arc<UserdataFile>,
    rebuilds: Arc<Rebuilds>,
) -> Outcome<Users> {
    let repository: Arc<dyn UserRepository> = match config.users_backend {
        crate::config::UsersBackend::Json => Arc::new(json::JsonUsers::new(rebuilds.clone())),
        crate::config::UsersBackend::Kanidm => Arc::new(kanidm::KanidmUsers::new(
            &config.kanidm_url,
            config.kanidm_token_file.clone(),
            userdata,
        )?),
    };
    Ok(Users::new(repository, rebuilds, config.passwd_file.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ssh_keys_live_where_nixos_reads_them() {
        let mut d = json!({"username": "owner", "sshKeys": ["k1"], "ssh": {"enable": true},
                           "users": [{"username": "bob", "hashedPassword": "$6$x", "extra": 1}]});
        ssh_keys_mut(&mut d, ROOT, UserKind::Root)
            .unwrap()
            .push("r".into());
        ssh_keys_mut(&mut d, "owner", UserKind::Primary)
            .unwrap()
            .push("k2".into());
        ssh_keys_mut(&mut d, "bob", UserKind::Normal)
            .unwrap()
            .push("b".into());
        ssh_keys_mut(&mut d, "carol", UserKind::Normal)
            .unwrap()
            .push("c".into());
        assert_eq!(d["ssh"], json!({"enable": true, "rootKeys": ["r"]}));
        assert_eq!(d["sshKeys"], json!(["k1", "k2"]));
        assert_eq!(
            d["users"],
            json!([{"username": "bob", "hashedPassword": "$6$x", "extra": 1, "sshKeys": ["b"]},
                   {"username": "carol", "sshKeys": ["c"]}])
        );
        assert_eq!(ssh_keys_of(&d, "carol", UserKind::Normal), ["c"]);
        assert_eq!(ssh_keys_of(&d, ROOT, UserKind::Root), ["r"]);
        remove_user_entry(&mut d, "carol");
        assert!(!has_user_entry(&d, "carol"));
    }

    #[test]
    fn account_input_debug_hides_the_password() {
        let input = AccountInput {
            username: "bob".into(),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(!format!("{input:?}").contains("hunter2"));
    }
}
