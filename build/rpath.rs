//! Shared build script for every package that links libtorch (through a direct `torch-sys`
//! dependency, which is what makes `DEP_TCH_LIBTORCH_LIB` visible here).
//!
//! It embeds the libtorch library directory as an rpath so that binaries and test executables run
//! without LD_LIBRARY_PATH, and exposes the same directory as `OFA_LIBTORCH_LIB` so the program can
//! find `libtorch_cuda.so` next to it at start-up. It also marks whether `../shared/reference-data`
//! is there ([`shared_data`]), for the tests that read it.
// A build script talks to cargo on stdout.
#![allow(clippy::print_stdout)]
#[path = "shared_data.rs"]
mod shared_data;

pub fn main() {
    shared_data::emit();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    match std::env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(dir) => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            println!("cargo:rustc-env=OFA_LIBTORCH_LIB={dir}");
        }
        Err(_) => println!("cargo:rustc-env=OFA_LIBTORCH_LIB="),
    }
}
