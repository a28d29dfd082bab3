//! method, listener, path, query and JSON body -> the policy decision (see eci_guard::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    eci_guard::fuzzing::request(data);
});
