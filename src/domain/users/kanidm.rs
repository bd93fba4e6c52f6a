//! Accounts in Kanidm, the identity provider of current SelfPrivacy
//! servers, over its REST API with a service account's API token (read
//! from a file at each request, so a renewed token needs no restart).
//! Members of `sp.admins` are the primary user; new users join
//! `sp.full_users`. SSH keys stay in userdata (see [`super::Users`]).

use super::{Account, AccountInput, Changed, GroupInfo, UserKind, UserRepository, already_exists};
use crate::domain::error::{Failure, FailureKind, Outcome};
use crate::domain::i18n::Text;
use crate::os::userdata::UserdataFile;
use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const ADMINS_GROUP: &str = "sp.admins";
pub const FULL_USERS_GROUP: &str = "sp.full_users";

/// How long one request to Kanidm may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

pub struct KanidmUsers {
    http: reqwest::Client,
    base: String,
    token_file: PathBuf,
    /// For the reset link's host: `https://auth.<domain>`.
    userdata: Arc<UserdataFile>,
}

impl KanidmUsers {
    /// `base`: Kanidm's URL, e.g. `https://127.0.0.1:3013`. Its certificate
    /// is for the public name, so on a loopback address it is not checked:
    /// the connection never leaves the machine.
    pub fn new(base: &str, token_file: PathBuf, userdata: Arc<UserdataFile>) -> Outcome<Self> {
        let loopback = reqwest::Url::parse(base)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .is_some_and(|host| {
                host == "localhost"
                    || host
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tls_danger_accept_invalid_certs(loopback)
            .build()
            .map_err(|e| Failure::internal("setting up the Kanidm client", e))?;
        Ok(KanidmUsers {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token_file,
            userdata,
        })
    }

    fn token(&self) -> Outcome<String> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            kanidm_failure(
                format!(
                    "Cannot read the Kanidm admin token from {}: {e}",
                    self.token_file.display()
                ),
                format!(
                    "Не удалось прочитать токен администратора Kanidm из {}: {e}",
                    self.token_file.display()
                ),
            )
        })?;
        Ok(token.trim().to_owned())
    }

    /// One request; `Ok(None)` for 404.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Outcome<Option<Value>> {
        let token = self.token()?;
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| {
            kanidm_failure(
                format!("Kanidm at {} is unreachable: {e}", self.base),
                format!("Kanidm по адресу {} недоступен: {e}", self.base),
            )
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        match status {
            s if s.is_success() => {
                Ok(Some(if text.trim().is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&text).map_err(|e| {
                    kanidm_failure(
                        format!("Kanidm answered {method} {path} with something that is not JSON: {e}"),
                        format!("Kanidm ответил на {method} {path} не в формате JSON: {e}"),
                    )
                })?
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::UNAUTHORIZED => Err(kanidm_failure(
                format!(
                    "Kanidm refused the admin token (expired or revoked); renew it in {}",
                    self.token_file.display()
                ),
                format!(
                    "Kanidm не принял токен администратора (истёк или отозван); обновите его в {}",
                    self.token_file.display()
                ),
            )),
            StatusCode::FORBIDDEN => Err(kanidm_failure(
                "The Kanidm admin token may not do this (access denied)".into(),
                "Токену администратора Kanidm это не разрешено (доступ запрещён)".into(),
            )),
            _ => {
                let detail: String = text.chars().take(200).collect();
                if detail.to_lowercase().contains("attrunique") {
                    return Err(Failure::conflict(
                        format!("Kanidm refused {method} {path}: the name is taken"),
                        format!("Kanidm отклонил {method} {path}: имя занято"),
                    ));
                }
                Err(kanidm_failure(
                    format!("Kanidm answered {method} {path} with {status}: {detail}"),
                    format!("Kanidm ответил на {method} {path} кодом {status}: {detail}"),
                ))
            }
        }
    }

    async fn add_member(&self, group: &str, username: &str) -> Outcome<()> {
        self.call(
            Method::POST,
            &format!("/v1/group/{}/_attr/member", segment(group)),
            Some(json!([username])),
        )
        .await?
        .ok_or_else(|| group_not_found(group))?;
        Ok(())
    }

    async fn remove_member(&self, group: &str, username: &str) -> Outcome<()> {
        self.call(
            Method::DELETE,
            &format!("/v1/group/{}/_attr/member", segment(group)),
            Some(json!([username])),
        )
        .await?
        .ok_or_else(|| group_not_found(group))?;
        Ok(())
    }

    async fn require(&self, username: &str) -> Outcome<Account> {
        self.get(username)
            .await?
            .ok_or_else(|| super::user_not_found(username))
    }
}

fn kanidm_failure(en: String, ru: String) -> Failure {
    tracing::warn!("{en}");
    Failure::new(FailureKind::Internal, Text::new(en, ru))
}

fn group_not_found(group: &str) -> Failure {
    Failure::not_found(
        format!("Group {group} not found"),
        format!("Группа {group} не найдена"),
    )
}

/// A name as one URL path segment (validated names need no escaping, but
/// group names come from the caller).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An attribute's values; group references lose their `@domain`.
fn attr(entry: &Value, name: &str) -> Vec<String> {
    entry
        .get("attrs")
        .and_then(|a| a.get(name))
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn short_names(values: Vec<String>) -> Vec<String> {
    values
        .into_iter()
        .map(|v| match v.split_once('@') {
            Some((name, _)) => name.to_owned(),
            None => v,
        })
        .collect()
}

fn account_of(entry: &Value) -> Option<Account> {
    let username = attr(entry, "name").into_iter().next()?;
    let memberof = short_names(attr(entry, "memberof"));
    let kind = if memberof.iter().any(|g| g == ADMINS_GROUP) {
        UserKind::Primary
    } else {
        UserKind::Normal
    };
    Some(Account {
        username,
        kind,
        display_name: attr(entry, "displayname").into_iter().next(),
        email: attr(entry, "mail").into_iter().next(),
        directmemberof: short_names(attr(entry, "directmemberof")),
        memberof,
    })
}

fn group_of(entry: &Value) -> Option<GroupInfo> {
    Some(GroupInfo {
        name: attr(entry, "name").into_iter().next()?,
        group_class: attr(entry, "class"),
        member: short_names(attr(entry, "member")),
        memberof: short_names(attr(entry, "memberof")),
        directmemberof: short_names(attr(entry, "directmemberof")),
        spn: attr(entry, "spn").into_iter().next(),
        description: attr(entry, "description").into_iter().next(),
    })
}

fn entries(value: Option<Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    }
}

#[async_trait]
impl UserRepository for KanidmUsers {
    fn stores_passwords(&self) -> bool {
        false
    }

    async fn list(&self) -> Outcome<Vec<Account>> {
        let mut accounts: Vec<Account> = entries(self.call(Method::GET, "/v1/person", None).await?)
            .iter()
            .filter_map(account_of)
            .collect();
        // The primary user first, as in userdata.
        accounts.sort_by_key(|a| a.kind != UserKind::Primary);
        Ok(accounts)
    }

    async fn get(&self, username: &str) -> Outcome<Option<Account>> {
        let entry = self
            .call(
                Method::GET,
                &format!("/v1/person/{}", segment(username)),
                None,
            )
            .await?;
        Ok(entry.as_ref().and_then(account_of))
    }

    async fn create(&self, input: &AccountInput) -> Outcome<Changed> {
        let display_name = input
            .display_name
            .clone()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| input.username.clone());
        let created = self
            .call(
                Method::POST,
                "/v1/person",
                Some(json!({"attrs": {"name": [input.username], "displayname": [display_name]}})),
            )
            .await;
        match created {
            Ok(_) => {}
            Err(f) if f.kind == FailureKind::Conflict => {
                return Err(already_exists(&input.username));
            }
            Err(f) => return Err(f),
        }
        let mut groups = vec![FULL_USERS_GROUP.to_owned()];
        groups.extend(input.directmemberof.iter().flatten().cloned());
        groups.dedup();
        for group in &groups {
            if let Err(failure) = self.add_member(group, &input.username).await {
                // No half-made user: one outside sp.full_users could not
                // use the services, and the name would be taken.
                let person = format!("/v1/person/{}", segment(&input.username));
                if let Err(e) = self.call(Method::DELETE, &person, None).await {
                    tracing::error!("removing half-created user {}: {e}", input.username);
                }
                return Err(failure);
            }
        }
        Ok(Changed {
            account: self.require(&input.username).await?,
            rebuild: None,
        })
    }

    async fn update(&self, input: &AccountInput) -> Outcome<Changed> {
        let current = self.require(&input.username).await?;
        let person = segment(&input.username);
        if let Some(name) = input
            .display_name
            .as_deref()
            .filter(|d| !d.trim().is_empty())
        {
            self.call(
                Method::PUT,
                &format!("/v1/person/{person}/_attr/displayname"),
                Some(json!([name])),
            )
            .await?
            .ok_or_else(|| super::user_not_found(&input.username))?;
        }
        // An empty list (the input's default) leaves memberships alone; the
        // server's own roles are never dropped this way.
        if let Some(wanted) = input.directmemberof.as_ref().filter(|g| !g.is_empty()) {
            for group in wanted {
                if !current.directmemberof.contains(group) {
                    self.add_member(group, &input.username).await?;
                }
            }
            for group in &current.directmemberof {
                if !wanted.contains(group) && group != ADMINS_GROUP && group != FULL_USERS_GROUP {
                    self.remove_member(group, &input.username).await?;
                }
            }
        }
        Ok(Changed {
            account: self.require(&input.username).await?,
            rebuild: None,
        })
    }

    async fn delete(&self, username: &str) -> Outcome<Option<super::Accepted>> {
        self.call(
            Method::DELETE,
            &format!("/v1/person/{}", segment(username)),
            None,
        )
        .await?
        .ok_or_else(|| super::user_not_found(username))?;
        Ok(None)
    }

    async fn groups(&self) -> Outcome<Vec<GroupInfo>> {
        Ok(entries(self.call(Method::GET, "/v1/group", None).await?)
            .iter()
            .filter_map(group_of)
            .collect())
    }

    async fn password_reset_link(&self, username: &str) -> Outcome<String> {
        let intent = self
            .call(
                Method::GET,
                &format!(
                    "/v1/person/{}/_credential/_update_intent",
                    segment(username)
                ),
                None,
            )
            .await?
            .ok_or_else(|| super::user_not_found(username))?;
        let token = intent
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                kanidm_failure(
                    "Kanidm issued no credential reset token".into(),
                    "Kanidm не выдал токен сброса учётных данных".into(),
                )
            })?;
        let document = self
            .userdata
            .read()
            .map_err(|e| Failure::internal("reading userdata", e))?;
        let domain = document
            .get("domain")
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                Failure::conflict(
                    "The server has no domain in userdata.json yet",
                    "В userdata.json сервера ещё нет домена",
                )
            })?;
        Ok(format!("https://auth.{domain}/ui/reset?token={token}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_become_accounts_and_groups() {
        let alice = json!({"attrs": {"name": ["alice"], "displayname": ["Alice A"],
            "memberof": ["sp.admins@example.org", "sp.full_users@example.org"],
            "directmemberof": ["sp.admins@example.org"], "mail": ["alice@example.org"]}});
        let account = account_of(&alice).unwrap();
        assert_eq!(account.kind, UserKind::Primary);
        assert_eq!(account.display_name.as_deref(), Some("Alice A"));
        assert_eq!(account.memberof, ["sp.admins", "sp.full_users"]);
        let bob = json!({"attrs": {"name": ["bob"], "memberof": ["sp.full_users@example.org"]}});
        assert_eq!(account_of(&bob).unwrap().kind, UserKind::Normal);
        assert!(account_of(&json!({"attrs": {}})).is_none());
        let group = group_of(&json!({"attrs": {"name": ["sp.admins"],
            "member": ["alice@example.org"], "spn": ["sp.admins@example.org"]}}))
        .unwrap();
        assert_eq!(group.member, ["alice"]);
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
