//! (stub: filled in by its issue)

/// Runs the scenario.
pub fn run() {
    println!("prefork_sim: not implemented yet");
}
