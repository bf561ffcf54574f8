//! Whether `../shared/reference-data` (beside the workspace) is there, for the tests that read it.
//!
//! Where it is absent, the build sets `cfg(shared_absent)` and those tests are
//! `#[cfg_attr(shared_absent, ignore = "…")]`: the harness counts them as skipped, with the reason.
//! Under `CI=true` the cfg is never set, so a CI machine without the folder runs them and they fail
//! naming it. The check runs when the build script runs (a first build, a change of `CI`, or a
//! change inside the folder when it is there): a folder added later needs `cargo clean -p <crate>`.
// A build script talks to cargo on stdout.
#![allow(clippy::print_stdout)]
use std::path::{Path, PathBuf};

/// The workspace root: the nearest folder above the package with a `Cargo.lock`.
fn workspace_root(manifest: &Path) -> Option<PathBuf> {
    manifest
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
}

pub fn emit() {
    println!("cargo::rustc-check-cfg=cfg(shared_absent)");
    println!("cargo:rerun-if-env-changed=CI");
    let Some(manifest) = std::env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let Some(root) = workspace_root(Path::new(&manifest)) else {
        return;
    };
    let data = root.join("../shared/reference-data");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if data.is_dir() {
        println!("cargo:rerun-if-changed={}", data.display());
    } else if !ci {
        println!("cargo:rustc-cfg=shared_absent");
    }
}
