//! The sp-module definition parser (`/etc/sp-modules/<id>`), as the
//! catalogue calls it: the first line of the input is the file name, the
//! rest the file. Whatever it accepts must be usable: a valid id equal to
//! the file name, unit names, compiled option regexes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfprivacy_api::domain::services::definition::{Definition, is_valid_id};

fuzz_target!(|data: &[u8]| {
    let (name, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"echo"[..], data),
    };
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let Ok(definition) = Definition::parse(name, body) else {
        return;
    };
    assert!(is_valid_id(&definition.meta.id));
    assert_eq!(definition.meta.id, name);
    let _ = definition.primary_subdomain_option();
    let _ = definition.meta.all_folders();
});
