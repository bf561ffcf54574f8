//! Build script of the packages that do not link libtorch: only [`shared_data`].
// A build script talks to cargo on stdout.
#![allow(clippy::print_stdout)]
#[path = "shared_data.rs"]
mod shared_data;

fn main() {
    shared_data::emit();
}
