//! The NixOS module and the example sp-modules against the real programs
//! they configure: the settings file the module generates (evaluated with
//! nixpkgs' real `lib`, tests/fixtures/nixos) through the daemon's
//! `check-config`.

use crate::support::BIN;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `selfprivacy-api check-config FILE`: (success, stdout + stderr).
fn check_config(file: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The TOML file nixos-module/default.nix makes from its default settings.
fn settings_file_of_the_nixos_module() -> PathBuf {
    let lib = std::env::var("SP_NIXPKGS_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("../shared/vendor/nixpkgs-lib/lib"));
    let expr = format!(
        "(import {}/tests/fixtures/nixos/eval.nix {{ nixpkgsLib = {}; moduleDirs = [ ]; }}).configBuildScript",
        repo().display(),
        lib.canonicalize()
            .expect("the vendored nixpkgs lib")
            .display()
    );
    let out = Command::new("nix")
        .args([
            "eval",
            "--extra-experimental-features",
            "nix-command flakes",
            "--offline",
            "--impure",
            "--raw",
            "--expr",
            &expr,
        ])
        .env("NIX_CONFIG", "build-users-group =")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    let file = script
        .split_whitespace()
        .skip_while(|word| *word != "check-config")
        .nth(1)
        .unwrap_or_else(|| panic!("no check-config in the build script: {script}"));
    PathBuf::from(file)
}

#[test]
fn check_config_accepts_the_module_settings_and_refuses_mistakes() {
    let generated = settings_file_of_the_nixos_module();
    let (ok, out) = check_config(&generated);
    assert!(ok, "{out}");
    assert!(out.contains(": ok"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "lisen = \"127.0.0.1:5050\"\n").unwrap();
    let (ok, out) = check_config(&typo);
    assert!(!ok);
    assert!(out.contains("unknown field `lisen`"), "{out}");

    let wrong_type = dir.path().join("wrong.toml");
    std::fs::write(&wrong_type, "listen = 5050\n").unwrap();
    let (ok, out) = check_config(&wrong_type);
    assert!(!ok);
    assert!(
        out.contains("wrong.toml"),
        "the message names the file: {out}"
    );

    let (ok, out) = check_config(&dir.path().join("absent.toml"));
    assert!(!ok);
    assert!(out.contains("cannot read"), "{out}");
}
