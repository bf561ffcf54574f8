#![no_main]
//! libFuzzer target `latency_json`: see `ofa_hostile::latency_json`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::latency_json(data));
