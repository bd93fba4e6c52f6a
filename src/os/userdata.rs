//! `/etc/nixos/userdata.json`: the server's declared configuration, shared
//! with NixOS. Reads see a whole file; writes are atomic (temp file, fsync,
//! rename, fsync of the directory) and serialized, and keep every key the
//! daemon does not know.

use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// The last parse, by the identity of the file it came from.
    parsed: Mutex<Option<(FileIdentity, Arc<Value>)>>,
}

/// Device, inode, size, modification and change times: a file replaced
/// (by rename) or edited in place differs in at least one.
type FileIdentity = (u64, u64, u64, i64, i64, i64, i64);

fn identity_of(meta: &std::fs::Metadata) -> FileIdentity {
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

impl UserdataFile {
    pub fn new(path: PathBuf) -> Self {
        UserdataFile {
            path,
            write_lock: Mutex::new(()),
            parsed: Mutex::new(None),
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

    /// The whole file as [`read`](Self::read) gives it, shared: parsed
    /// again only when the file changed since the last parse (one `stat`
    /// otherwise). For the request paths that read it on every query.
    pub fn read_shared(&self) -> Result<Arc<Value>, UserdataError> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Arc::new(Value::Object(Default::default())));
            }
            Err(source) => {
                return Err(UserdataError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let identity = identity_of(&meta);
        if let Some((known, document)) = self
            .parsed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            && *known == identity
        {
            return Ok(document.clone());
        }
        // Stat before read: a change in between is seen by the next stat.
        let document = Arc::new(self.read()?);
        *self.parsed.lock().unwrap_or_else(|e| e.into_inner()) = Some((identity, document.clone()));
        Ok(document)
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

    #[test]
    fn shared_reads_follow_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("userdata.json");
        let file = UserdataFile::new(path.clone());
        assert_eq!(*file.read_shared().unwrap(), serde_json::json!({}));
        std::fs::write(&path, r#"{"domain":"a.org"}"#).unwrap();
        let first = file.read_shared().unwrap();
        assert_eq!(first["domain"], "a.org");
        assert!(
            Arc::ptr_eq(&first, &file.read_shared().unwrap()),
            "not parsed again"
        );
        // Our own atomic write, then an edit in place of the same size.
        file.update(|d| {
            d["domain"] = "b.org".into();
            Ok::<_, ()>(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(file.read_shared().unwrap()["domain"], "b.org");
        std::fs::write(&path, r#"{"domain":"c.org"}"#).unwrap();
        assert_eq!(file.read_shared().unwrap()["domain"], "c.org");
        std::fs::write(&path, "{ not json").unwrap();
        assert!(matches!(
            file.read_shared(),
            Err(UserdataError::Parse { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(*file.read_shared().unwrap(), serde_json::json!({}));
    }

    #[test]
    fn floats_are_written_back_exactly() {
        // Found by the generated round trip: without serde_json's
        // `float_roundtrip`, this read back one bit off.
        let dir = tempfile::tempdir().unwrap();
        let file = UserdataFile::new(dir.path().join("userdata.json"));
        let document = serde_json::json!({ "x": 6.95641839245927e-182 });
        file.replace(&document).unwrap();
        assert_eq!(file.read().unwrap(), document);
    }

    /// Any JSON document: every kind of value, unicode keys and strings.
    fn any_document() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        let tree = leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map(any::<String>(), tree, 0..8)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the file holds, writing it and reading it back gives
        /// every key and value again, and an edit of one key changes
        /// nothing else.
        #[test]
        fn write_then_read_keeps_every_key_and_value(document in any_document()) {
            // tmpfs where there is one: the same writes, without waiting
            // for a disk on each sync.
            let shm = std::path::Path::new("/dev/shm");
            let dir = if shm.is_dir() {
                tempfile::tempdir_in(shm).unwrap()
            } else {
                tempfile::tempdir().unwrap()
            };
            let file = UserdataFile::new(dir.path().join("userdata.json"));
            file.replace(&document).unwrap();
            proptest::prop_assert_eq!(&file.read().unwrap(), &document);
            proptest::prop_assert_eq!(&*file.read_shared().unwrap(), &document);
            file.update(|d| {
                d["domain"] = "changed.example".into();
                Ok::<_, ()>(())
            })
            .unwrap()
            .unwrap();
            let mut expected = document.clone();
            expected["domain"] = "changed.example".into();
            proptest::prop_assert_eq!(file.read().unwrap(), expected);
        }
    }
}
