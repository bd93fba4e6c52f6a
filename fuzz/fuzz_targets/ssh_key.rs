//! SSH public key validation (users' keys). What it accepts it accepts
//! again unchanged (the normalized line is a fixed point), and the key's
//! identity survives normalization.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfprivacy_api::domain::users::validation::{check_ssh_key, key_identity};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normalized) = check_ssh_key(text) else {
        return;
    };
    let again = check_ssh_key(&normalized).expect("a normalized key is accepted again");
    assert_eq!(again, normalized);
    assert_eq!(key_identity(&normalized), key_identity(text.trim()));
});
