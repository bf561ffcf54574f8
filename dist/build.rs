//! Compiles the c10d shim (`csrc/shim.cpp`) against the torch wheel's headers and Debian's Gloo
//! headers (`libgloo-dev`, installed by `make setup`; the Gloo code itself is inside
//! libtorch_cpu.so, so nothing more is linked), and embeds libtorch's rpath.
// A build script talks to cargo on stdout.
#![allow(clippy::print_stdout)]

#[path = "../build/rpath.rs"]
mod rpath;

fn main() {
    rpath::main();
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // The ABI torch-sys builds with (its LIBTORCH_CXX11_ABI, default 1): the shim passes
    // `std::string`s to libtorch, so both sides must agree.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not say where libtorch is (DEP_TCH_LIBTORCH_LIB)");
    let include = std::path::Path::new(&lib).join("../include");
    // A new torch wheel (or Gloo package) changes the classes the shim allocates: rebuild it.
    for h in [
        "torch/csrc/distributed/c10d/ProcessGroupGloo.hpp",
        "torch/csrc/distributed/c10d/TCPStore.hpp",
        "torch/csrc/distributed/c10d/PrefixStore.hpp",
        "torch/csrc/distributed/c10d/Backend.hpp",
    ] {
        println!("cargo:rerun-if-changed={}", include.join(h).display());
    }
    println!("cargo:rerun-if-changed=/usr/include/gloo/rendezvous/store.h");
    if !std::path::Path::new("/usr/include/gloo/config.h").exists() {
        println!(
            "cargo:warning=Gloo headers missing (/usr/include/gloo): run `make setup` (it installs libgloo-dev)"
        );
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("csrc/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .opt_level(1)
        .compile("ofa_c10d_shim");
}
