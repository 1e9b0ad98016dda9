//! Fuzz target `multi`: arbitrary bytes drive the multi harness in moor-tests, whose invariant
//! checks panic on a violation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    moor_tests::multi::fuzz(data);
});
