//! (stub: filled in by its issue)

/// Fuzz entry point.
pub fn fuzz(_data: &[u8]) {}
