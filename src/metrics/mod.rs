//! (being written)
pub mod prim;
