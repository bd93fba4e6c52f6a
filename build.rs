//! Records the compiler's version for `system.info.pythonVersion`, where
//! the app shows the API's runtime.

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|| "rustc, version unknown".into());
    println!("cargo:rustc-env=SELFPRIVACY_API_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}
