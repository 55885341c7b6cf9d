//! The tokio daemon around the pure core.

pub mod transport;
