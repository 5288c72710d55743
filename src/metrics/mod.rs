//! (being written: the registry and the exposition thread)
pub mod core;
pub mod labels;
pub mod prim;
pub mod sinks;
