//! (stub: filled in by its issue)

/// Runs the scenario.
pub fn run() {
    println!("multi_core: not implemented yet");
}
