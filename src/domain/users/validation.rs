//! What a username, an SSH key and a password must be before anything is
//! written.

use crate::domain::error::{Failure, Outcome};
use ssh_key::public::KeyData;
use std::path::Path;

/// Longest username: what `useradd` and most tools accept.
pub const MAX_USERNAME_LEN: usize = 32;

/// Names the server or its services use, refused even when no such system
/// user exists yet (a service enabled later would clash).
const RESERVED: &[&str] = &[
    "root",
    "admin",
    "administrator",
    "daemon",
    "bin",
    "sys",
    "sync",
    "nobody",
    "nogroup",
    "sshd",
    "messagebus",
    "polkituser",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "systemd-journal",
    "nixbld",
    "nginx",
    "acme",
    "postgres",
    "redis",
    "dovecot2",
    "postfix",
    "opendkim",
    "rspamd",
    "vmail",
    "selfprivacy-api",
    "kanidm",
    "www-data",
    "mail",
    "ftp",
    "git",
    "gitea",
    "forgejo",
    "nextcloud",
    "jitsi",
    "ocserv",
    "pleroma",
    "matrix-synapse",
    "mumble-server",
    "roundcube",
    "prometheus",
    "bitwarden",
    "vaultwarden",
    "writefreely",
    "hedgedoc",
    "sp",
    "selfprivacy",
];

/// Unix rules: a lowercase letter or `_` first, then lowercase letters,
/// digits, `_` or `-`; at most 32 characters; not reserved.
pub fn check_username(username: &str) -> Outcome<()> {
    let bad = |why_en: &str, why_ru: &str| {
        Failure::bad_input(
            format!("Invalid username {username:?}: {why_en}"),
            format!("Недопустимое имя пользователя {username:?}: {why_ru}"),
        )
    };
    if username.is_empty() {
        return Err(bad("it is empty", "оно пустое"));
    }
    if username.len() > MAX_USERNAME_LEN {
        return Err(bad(
            &format!("longer than {MAX_USERNAME_LEN} characters"),
            &format!("длиннее {MAX_USERNAME_LEN} символов"),
        ));
    }
    let mut chars = username.chars();
    let first = chars.next().unwrap_or_default();
    if !(first.is_ascii_lowercase() || first == '_') {
        return Err(bad(
            "it must start with a lowercase Latin letter or _",
            "оно должно начинаться со строчной латинской буквы или _",
        ));
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
        return Err(bad(
            "only lowercase Latin letters, digits, _ and - are allowed",
            "допустимы только строчные латинские буквы, цифры, _ и -",
        ));
    }
    if RESERVED.contains(&username) {
        return Err(bad("the name is reserved", "это имя зарезервировано"));
    }
    Ok(())
}

/// The names of the system's own accounts (`/etc/passwd`).
pub fn system_users(passwd_file: &Path) -> Outcome<Vec<String>> {
    let text = match std::fs::read_to_string(passwd_file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Failure::internal("reading the system's users", e)),
    };
    Ok(text
        .lines()
        .filter_map(|line| line.split(':').next())
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Smallest RSA modulus accepted.
pub const MIN_RSA_BITS: usize = 2048;

/// Parses an OpenSSH public key line (`type base64 [comment]`) and returns
/// it normalized to one line with single spaces. Ed25519, ECDSA, RSA of at
/// least 2048 bits and security keys (`sk-`) are accepted; DSA, short RSA
/// and anything whose blob does not decode are refused.
pub fn check_ssh_key(key: &str) -> Outcome<String> {
    let line = key.trim();
    let bad = |why_en: String, why_ru: String| {
        Failure::bad_input(
            format!("Invalid SSH key: {why_en}"),
            format!("Недопустимый SSH-ключ: {why_ru}"),
        )
    };
    if line.is_empty() || line.contains(['\n', '\r', '\0']) {
        return Err(bad(
            "give exactly one key on one line".into(),
            "нужен ровно один ключ в одной строке".into(),
        ));
    }
    // Blanks between the parts are one separator to OpenSSH (a tab or two
    // spaces, as pasted); the parser wants exactly one space.
    let normalized = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let parsed = ssh_key::PublicKey::from_openssh(&normalized).map_err(|e| {
        bad(
            format!("not an OpenSSH public key ({e})"),
            format!("это не открытый ключ OpenSSH ({e})"),
        )
    })?;
    match parsed.key_data() {
        KeyData::Ed25519(_)
        | KeyData::Ecdsa(_)
        | KeyData::SkEd25519(_)
        | KeyData::SkEcdsaSha2NistP256(_) => {}
        KeyData::Rsa(rsa) => {
            let bits = rsa
                .n
                .as_positive_bytes()
                .map(|b| {
                    let leading = b.first().map_or(8, |x| x.leading_zeros() as usize);
                    b.len() * 8 - leading
                })
                .unwrap_or(0);
            if bits < MIN_RSA_BITS {
                return Err(bad(
                    format!(
                        "an RSA key must have at least {MIN_RSA_BITS} bits, this one has {bits}"
                    ),
                    format!("ключ RSA должен быть не короче {MIN_RSA_BITS} бит, у этого {bits}"),
                ));
            }
        }
        other => {
            return Err(bad(
                format!("{} keys are not accepted", other.algorithm()),
                format!("ключи {} не принимаются", other.algorithm()),
            ));
        }
    }
    // Keep the key as given (with its comment), whitespace normalized.
    Ok(normalized)
}

/// The key part of an OpenSSH line (type and blob, without the comment):
/// two lines for the same key are the same key.
pub fn key_identity(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Longest password taken: SHA-512 crypt's cost grows with the length
/// times its 5,000 rounds, so a megabyte would hold a request for minutes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// crypt(3) SHA-512 (`$6$`), what NixOS' `hashedPassword` takes.
pub fn hash_password(password: &str) -> Outcome<String> {
    if password.is_empty() {
        return Err(Failure::bad_input("The password is empty", "Пароль пустой"));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(Failure::bad_input(
            format!("The password is longer than {MAX_PASSWORD_BYTES} bytes"),
            format!("Пароль длиннее {MAX_PASSWORD_BYTES} байт"),
        ));
    }
    if password.contains(['\n', '\0']) {
        return Err(Failure::bad_input(
            "The password must not contain line breaks or NUL characters",
            "Пароль не должен содержать переводов строки и символов NUL",
        ));
    }
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
        .map_err(|e| Failure::internal("hashing a password", format!("{e:?}")))?;
    sha_crypt::sha512_simple(password, &params)
        .map_err(|e| Failure::internal("hashing a password", format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::FailureKind;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";

    #[test]
    fn usernames_follow_unix_rules() {
        for good in ["alice", "_svc", "bob-2", "a", &"x".repeat(32)] {
            check_username(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "Alice",
            "1abc",
            "-abc",
            "ali ce",
            "alice$",
            "al/ce",
            "алиса",
            "root",
            "nobody",
            &"x".repeat(33),
        ] {
            let e = check_username(bad).expect_err(bad);
            assert_eq!(e.kind, FailureKind::BadInput, "{bad}");
        }
    }

    #[test]
    fn passwd_names_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/sh\nmessagebus:x:4:4::/:/bin/false\n",
        )
        .unwrap();
        assert_eq!(system_users(&passwd).unwrap(), ["root", "messagebus"]);
        assert!(system_users(&dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn ssh_keys_are_parsed() {
        assert_eq!(check_ssh_key(&format!("  {ED25519}\n")).unwrap(), ED25519);
        assert_eq!(key_identity(ED25519), ED25519.rsplit_once(' ').unwrap().0);
        // Found by the generated tests: a tab or two spaces between the
        // parts, as OpenSSH accepts them, were refused.
        let pasted = ED25519.replacen(' ', "\t ", 1).replacen(' ', "  ", 1);
        assert_eq!(check_ssh_key(&pasted).unwrap(), ED25519);
        for bad in [
            "",
            "ssh-ed25519",
            "ssh-ed25519 not-base64!!",
            // Valid base64, truncated blob.
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6",
            // The type says RSA, the blob is Ed25519.
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
            // Two keys.
            &format!("{ED25519}\n{ED25519}"),
        ] {
            let e = check_ssh_key(bad).expect_err(bad);
            assert_eq!(e.kind, FailureKind::BadInput, "{bad}");
        }
    }

    #[test]
    fn passwords_are_sha512_crypt() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$6$"), "{hash}");
        assert!(!hash.contains("correct horse"));
        sha_crypt::sha512_check("correct horse", &hash).unwrap();
        assert!(hash_password("").is_err());
        assert!(hash_password(&"p".repeat(MAX_PASSWORD_BYTES)).is_ok());
        let refused = hash_password(&"p".repeat(MAX_PASSWORD_BYTES + 1)).unwrap_err();
        assert!(
            refused.to_string().contains("longer than 1024"),
            "{refused}"
        );
    }

    mod generated {
        use super::super::*;
        use proptest::prelude::*;
        use ssh_key::public::{Ed25519PublicKey, RsaPublicKey};
        use ssh_key::{Mpint, PublicKey};

        /// Spaces and tabs, as people paste them.
        fn blank() -> impl Strategy<Value = String> {
            "[ \t]{1,3}"
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any Ed25519 key as OpenSSH formats it, with any comment and
            /// any blanks around its parts, is accepted; the result is that
            /// line with single spaces, accepted again unchanged, and the
            /// same key.
            #[test]
            fn formatted_ed25519_keys_are_accepted_as_formatted(
                bytes in any::<[u8; 32]>(),
                comment in "([!-~]{1,10}( [!-~]{1,10}){0,2})?",
                lead in "[ \t]{0,2}",
                sep in blank(),
                trail in "[ \t]{0,2}",
            ) {
                let key = PublicKey::new(ssh_key::public::KeyData::Ed25519(Ed25519PublicKey(bytes)), "");
                let line = key.to_openssh().unwrap();
                let with_comment = if comment.is_empty() { line.clone() } else { format!("{line} {comment}") };
                let pasted = format!("{lead}{}{trail}", with_comment.replacen(' ', &sep, 1));
                let accepted = check_ssh_key(&pasted).unwrap();
                prop_assert_eq!(&accepted, &with_comment);
                prop_assert_eq!(check_ssh_key(&accepted).unwrap(), accepted.clone());
                prop_assert_eq!(key_identity(&accepted), line);
            }

            /// RSA keys are accepted exactly from 2048 bits of modulus on.
            #[test]
            fn rsa_keys_are_accepted_from_2048_bits(
                top in 1u8..=255,
                rest in prop::collection::vec(any::<u8>(), 240..272),
            ) {
                let mut modulus = vec![top];
                modulus.extend(rest);
                let bits = modulus.len() * 8 - top.leading_zeros() as usize;
                let rsa = RsaPublicKey {
                    e: Mpint::from_positive_bytes(&[1, 0, 1]).unwrap(),
                    n: Mpint::from_positive_bytes(&modulus).unwrap(),
                };
                let line = PublicKey::new(ssh_key::public::KeyData::Rsa(rsa), "k")
                    .to_openssh()
                    .unwrap();
                prop_assert_eq!(check_ssh_key(&line).is_ok(), bits >= MIN_RSA_BITS, "{} bits", bits);
            }

            /// More than one line is never one key.
            #[test]
            fn line_breaks_are_refused(
                bytes in any::<[u8; 32]>(),
                cut in 0usize..80,
                brk in prop_oneof![Just('\n'), Just('\r'), Just('\0')],
            ) {
                let line = PublicKey::new(ssh_key::public::KeyData::Ed25519(Ed25519PublicKey(bytes)), "c")
                    .to_openssh()
                    .unwrap();
                let at = cut.min(line.len() - 1).max(1);
                let broken = format!("{}{brk}{}", &line[..at], &line[at..]);
                prop_assert!(check_ssh_key(&broken).is_err());
            }
        }
    }
}
