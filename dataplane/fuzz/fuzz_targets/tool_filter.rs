#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_dataplane::fuzz::tool_filter(data));
