#![no_main]
//! libFuzzer target `supernet_safetensors`: see `ofa_hostile::supernet_safetensors`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ofa_hostile::supernet_safetensors(data));
