//! The secrets file: a JSON document only root may read (mode 0600),
//! written atomically, keeping every key it does not change. Its values
//! never go to logs or error messages.

use serde_json::Value;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct SecretsFile {
    path: PathBuf,
    write_lock: Mutex<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    // The parser's message may quote the file: only its position is kept.
    #[error("{path} is not a JSON object (line {line})")]
    Parse { path: PathBuf, line: usize },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl SecretsFile {
    pub fn new(path: PathBuf) -> Self {
        SecretsFile {
            path,
            write_lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<Value, SecretsError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Value::Object(Default::default()));
            }
            Err(source) => {
                return Err(SecretsError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(value) if value.is_object() => Ok(value),
            Ok(_) => Err(SecretsError::Parse {
                path: self.path.clone(),
                line: 1,
            }),
            Err(e) => Err(SecretsError::Parse {
                path: self.path.clone(),
                line: e.line(),
            }),
        }
    }

    /// Reads the document, lets `change` edit it and writes it back with
    /// mode 0600 (a file found with a wider mode is narrowed first).
    pub fn update(&self, change: impl FnOnce(&mut Value)) -> Result<(), SecretsError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut document = self.read()?;
        change(&mut document);
        let write_error = |source| SecretsError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(write_error)?;
        }
        if self.path.exists() {
            std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o600))
                .map_err(write_error)?;
        }
        let mut text = serde_json::to_string_pretty(&document).expect("JSON values serialize");
        text.push('\n');
        super::files::write_atomically(&self.path, text.as_bytes(), 0o600).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_0600_keeping_other_keys_even_over_a_wider_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("selfprivacy/secrets.json");
        let secrets = SecretsFile::new(path.clone());
        secrets
            .update(|d| d["dns"] = serde_json::json!({"apiKey": "one"}))
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(
            &path,
            r#"{"other": {"keep": true}, "dns": {"apiKey": "one"}}"#,
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        secrets
            .update(|d| d["dns"]["apiKey"] = "two".into())
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let after: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(after["other"]["keep"], true);
        assert_eq!(after["dns"]["apiKey"], "two");
    }

    #[test]
    fn a_broken_file_is_left_alone_and_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, "{\"dns\": \"hunter2").unwrap();
        let error = SecretsFile::new(path.clone())
            .update(|d| d["x"] = 1.into())
            .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"dns\": \"hunter2"
        );
    }
}
