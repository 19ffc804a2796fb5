//! Tasklane's domain: records, validation, status derivation and the business rules of every
//! operation. Storage is reached only through the primitives of [`store`], so the same rules run on
//! every backend.

pub mod claim_audience;
pub mod derive;
pub mod error;
pub mod model;
pub mod observe;
pub mod page;
pub mod policy;
pub mod store;
pub mod time;
pub mod tokens;

pub use error::{Error, Result};
pub mod ids;
pub mod input;
pub mod service;
pub mod validate;
pub mod views;
