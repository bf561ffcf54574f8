//! Build script of the packages that do not link libtorch: only [`shared_data`].
#[path = "shared_data.rs"]
mod shared_data;

fn main() {
    shared_data::emit();
}
