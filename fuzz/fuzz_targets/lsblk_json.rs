//! `lsblk -J -b` output: every device, children flattened after parents.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfprivacy_api::os::blockdev::parse_lsblk;

fuzz_target!(|data: &[u8]| {
    if let Ok(devices) = parse_lsblk(data) {
        for device in devices {
            assert!(!device.path.is_empty());
        }
    }
});
