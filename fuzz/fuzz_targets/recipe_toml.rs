#![no_main]
//! libFuzzer target `recipe_toml`: see `ofa_hostile::recipe_toml`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::recipe_toml(data));
