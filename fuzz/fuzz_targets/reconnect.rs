//! Fuzz target `reconnect`: arbitrary bytes drive the reconnect harness in moor-tests, whose invariant
//! checks panic on a violation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    moor_tests::reconnect::fuzz(data);
});
