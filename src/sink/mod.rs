//! (being written)
pub mod log;
