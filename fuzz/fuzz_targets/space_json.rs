#![no_main]
//! libFuzzer target `space_json`: see `ofa_hostile::space_json`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::space_json(data));
