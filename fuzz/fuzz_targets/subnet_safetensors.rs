#![no_main]
//! libFuzzer target `subnet_safetensors`: see `ofa_hostile::subnet_safetensors`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::subnet_safetensors(data));
