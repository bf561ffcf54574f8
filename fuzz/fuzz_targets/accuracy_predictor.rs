#![no_main]
//! libFuzzer target `accuracy_predictor`: see `ofa_hostile::accuracy_predictor`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::accuracy_predictor(data));
