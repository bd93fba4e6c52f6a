//! restic's `--json` output: backup progress lines, the snapshot list and
//! the restore size. Progress stays within 0..=100.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfprivacy_api::os::restic::{BackupEvent, parse_restore_size, parse_snapshots};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        if let Some(BackupEvent::Progress(percent)) = BackupEvent::parse(line) {
            assert!((0..=100).contains(&percent), "{percent}");
        }
    }
    let _ = parse_snapshots(&text);
    let _ = parse_restore_size(&text);
});
