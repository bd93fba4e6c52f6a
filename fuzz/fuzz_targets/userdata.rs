//! The userdata reader on any file content, and its write/read round trip:
//! whatever the reader accepts, writing it back and reading it again gives
//! the same document (no key or value lost).
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfprivacy_api::os::userdata::{UserdataError, UserdataFile};
use std::path::PathBuf;
use std::sync::OnceLock;

/// One file per fuzzing process, in shared memory when there is some (the
/// atomic write syncs; tmpfs makes that free).
fn file() -> &'static UserdataFile {
    static FILE: OnceLock<(PathBuf, UserdataFile)> = OnceLock::new();
    &FILE
        .get_or_init(|| {
            let base = if std::path::Path::new("/dev/shm").is_dir() {
                PathBuf::from("/dev/shm")
            } else {
                std::env::temp_dir()
            };
            let dir = base.join(format!("sp-fuzz-userdata-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a scratch directory");
            let path = dir.join("userdata.json");
            (path.clone(), UserdataFile::new(path))
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let file = file();
    std::fs::write(file.path(), data).expect("writing the input");
    let document = match file.read() {
        Ok(document) => document,
        Err(UserdataError::Parse { .. } | UserdataError::Read { .. }) => return,
        Err(other) => panic!("unexpected error: {other}"),
    };
    assert_eq!(*file.read_shared().unwrap(), document);
    file.replace(&document).expect("writing back");
    let again = file.read().expect("what was written reads");
    assert_eq!(again, document, "the round trip changed the document");
});
