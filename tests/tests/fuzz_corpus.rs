//! Replays every committed fuzz corpus file through its target's harness, so the corpora are
//! regression tests even where libFuzzer is not built.

use std::fs;
use std::path::Path;

type Target = (&'static str, fn(&[u8]));

const TARGETS: &[Target] = &[
    ("pool", moor_tests::pool::fuzz),
    ("multi", moor_tests::multi::fuzz),
    ("codec", moor_tests::codec::fuzz),
    ("reconnect", moor_tests::reconnect::fuzz),
    ("prefork", moor_tests::prefork::fuzz),
];

#[test]
fn every_corpus_file_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut replayed = 0;
    for (name, fuzz) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let data = fs::read(&file).unwrap();
            fuzz(&data);
            replayed += 1;
        }
    }
    assert!(replayed >= 5, "only {replayed} corpus files found");
}

/// Every target must take any bytes: a few thousand seeded random inputs each (the committed
/// corpora hold what coverage-guided runs found; this catches the obvious without libFuzzer).
#[test]
fn every_target_survives_random_bytes() {
    for (name, fuzz) in TARGETS {
        let mut rng = moor_core::Rng::new(7);
        for i in 0..2_000 {
            let len = i % 700;
            let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            let result = std::panic::catch_unwind(|| fuzz(&data));
            assert!(
                result.is_ok(),
                "target {name} failed on random input #{i}: {data:?}"
            );
        }
    }
}
