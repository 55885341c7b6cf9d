//! The Rust client library.
