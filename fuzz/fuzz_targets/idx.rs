#![no_main]
//! libFuzzer target `idx`: see `ofa_hostile::idx`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::idx(data));
