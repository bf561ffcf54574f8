#![no_main]
//! libFuzzer target `arch_json`: see `ofa_hostile::arch_json`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::arch_json(data));
