#![no_main]
//! libFuzzer target `accuracy_dataset`: see `ofa_hostile::accuracy_dataset`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::accuracy_dataset(data));
