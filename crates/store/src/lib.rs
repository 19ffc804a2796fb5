//! Tasklane's storage backends. Each backend implements the primitives of
//! [`tasklane_core::store`]; no business rule lives here, so the rules in `tasklane-core` run
//! unchanged on every backend.

pub mod sqlite;

pub use sqlite::{SqliteStore, StoreOptions};
