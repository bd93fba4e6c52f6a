//! `journalctl --output=json` lines, as the log queries read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfprivacy_api::os::journal::JournalEntry;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for line in text.lines() {
        let _ = JournalEntry::parse(line);
    }
});
