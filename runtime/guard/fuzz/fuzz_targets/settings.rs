//! admin-settings.json / policy.json text -> the guard's policy (see eci_guard::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    eci_guard::fuzzing::settings(data);
});
