//! Fuzz harnesses.
