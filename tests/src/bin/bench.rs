//! The benchmark binary: `cargo run --release -p moor-tests --bin bench -- <scenario>|all`.

use std::process::ExitCode;

use moor_tests::bench::SCENARIOS;

fn main() -> ExitCode {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    if wanted.is_empty() || wanted.iter().any(|a| a == "-h" || a == "--help") {
        eprintln!("usage: bench <scenario>... | all");
        eprintln!("scenarios:");
        for s in SCENARIOS {
            eprintln!("  {}", s.name);
        }
        return if wanted.is_empty() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    for name in &wanted {
        if name != "all" && !SCENARIOS.iter().any(|s| s.name == name) {
            eprintln!("bench: unknown scenario `{name}` (try --help)");
            return ExitCode::FAILURE;
        }
    }
    for s in SCENARIOS {
        if wanted.iter().any(|w| w == "all" || w == s.name) {
            (s.run)();
        }
    }
    ExitCode::SUCCESS
}
