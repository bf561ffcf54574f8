#![no_main]
//! libFuzzer target `cifar`: see `ofa_hostile::cifar`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::cifar(data));
