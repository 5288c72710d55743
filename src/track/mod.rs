//! Tracking: the locally answered endpoints (pixel, collect, token hand-out,
//! health), tg1 tokens, client IP, and turning requests into encoded events.

pub mod client_ip;
pub mod collect;
pub mod endpoints;
pub mod event;
pub mod ids;
pub mod ipmode;
pub mod json;
pub mod pixel;
pub mod ratelimit;
pub mod script;
pub mod token;
