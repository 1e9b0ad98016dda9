//! Fuzz target `pool`: arbitrary bytes drive the pool harness in moor-tests, whose invariant
//! checks panic on a violation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    moor_tests::pool::fuzz(data);
});
