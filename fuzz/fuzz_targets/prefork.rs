//! Fuzz target `prefork`: arbitrary bytes drive the prefork harness in moor-tests, whose invariant
//! checks panic on a violation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    moor_tests::prefork::fuzz(data);
});
