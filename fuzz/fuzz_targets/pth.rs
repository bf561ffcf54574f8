#![no_main]
//! libFuzzer target `pth`: see `ofa_hostile::pth`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::pth(data));
