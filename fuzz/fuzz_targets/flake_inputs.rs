//! The flake.nix editor on any text: listing the installed modules and
//! adding one. A file it cannot follow is refused by both; an added module
//! is listed afterwards with every earlier one, and adding it again changes
//! nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use selfprivacy_api::domain::services::flake::{add_module_input, installed_modules};

fuzz_target!(|data: &[u8]| {
    let Ok(flake) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(before) = installed_modules(flake) else {
        assert!(add_module_input(flake, "fuzzed", "path:./x").is_err());
        return;
    };
    let Ok(edited) = add_module_input(flake, "fuzzed", "path:./x") else {
        return;
    };
    let after = installed_modules(&edited).expect("the edited file lexes");
    assert!(after.iter().any(|m| m == "fuzzed"), "{after:?}");
    for id in &before {
        assert!(after.contains(id), "{id} lost");
    }
    assert_eq!(
        add_module_input(&edited, "fuzzed", "other").unwrap(),
        edited
    );
});
