//! The tokio daemon around the pure core.
