//! Proxying to the origin: the per-core upstream connection pool, the
//! destination and its DNS refresh, hop-by-hop header rules and forwarding.

pub mod forward;
pub mod hop;
pub mod inject;
pub mod pool;
pub mod upstream;
