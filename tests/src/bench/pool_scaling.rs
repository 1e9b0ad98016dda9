//! (stub: filled in by its issue)

/// Runs the scenario.
pub fn run() {
    println!("pool_scaling: not implemented yet");
}
