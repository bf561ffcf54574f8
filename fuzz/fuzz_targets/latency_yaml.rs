#![no_main]
//! libFuzzer target `latency_yaml`: see `ofa_hostile::latency_yaml`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::latency_yaml(data));
