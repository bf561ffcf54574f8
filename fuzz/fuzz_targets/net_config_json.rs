#![no_main]
//! libFuzzer target `net_config_json`: see `ofa_hostile::net_config_json`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::net_config_json(data));
