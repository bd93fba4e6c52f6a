//! `/etc/nixos/userdata.json`: the server's declared configuration, shared
//! with NixOS. Reads see a whole file; writes are atomic (temp file, fsync,
//! rename, fsync of the directory) and serialized, and keep every key the
//! daemon does not know.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum UserdataError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct UserdataFile {
    path: PathBuf,
    /// One writer at a time: a read-modify-write must not interleave.
    write_lock: Mutex<()>,
}

impl UserdataFile {
    pub fn new(path: PathBuf) -> Self {
        UserdataFile {
            path,
            write_lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file; a missing file reads as `{}` (a server being set up).
    pub fn read(&self) -> Result<Value, UserdataError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Value::Object(Default::default()));
            }
            Err(source) => {
                return Err(UserdataError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        serde_json::from_str(&text).map_err(|source| UserdataError::Parse {
            path: self.path.clone(),
            source,
        })
    }

    /// Reads, lets `change` edit the document, and writes it back
    /// atomically. If `change` fails, nothing is written.
    pub fn update<T, E>(
        &self,
        change: impl FnOnce(&mut Value) -> Result<T, E>,
    ) -> Result<Result<T, E>, UserdataError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut document = self.read()?;
        let result = change(&mut document);
        if result.is_ok() {
            self.write(&document)?;
        }
        Ok(result)
    }

    /// Replaces the file with `document`, atomically.
    pub fn replace(&self, document: &Value) -> Result<(), UserdataError> {
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.write(document)
    }

    fn write(&self, document: &Value) -> Result<(), UserdataError> {
        let mut text = serde_json::to_string_pretty(document).expect("JSON values serialize");
        text.push('\n');
        super::files::write_atomically(&self.path, text.as_bytes(), 0o600).map_err(|source| {
            UserdataError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_keeps_unknown_keys_and_writes_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userdata.json");
        std::fs::write(&path, r#"{"domain":"x.org","unknown":{"keep":[1,2]}}"#).unwrap();
        let file = UserdataFile::new(path.clone());
        file.update(|d| {
            d["modules"] = serde_json::json!({"a": {"enable": true}});
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        let after = file.read().unwrap();
        assert_eq!(after["unknown"]["keep"][1], 2);
        assert_eq!(after["modules"]["a"]["enable"], true);
        let before = std::fs::read_to_string(&path).unwrap();
        let failed = file.update(|d| {
            d["domain"] = "changed".into();
            Err::<(), _>("refused")
        });
        assert!(failed.unwrap().is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files left");
    }
}
