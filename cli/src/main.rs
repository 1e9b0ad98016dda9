//! The `moor` command (placeholder until the demo lands).
fn main() {}
