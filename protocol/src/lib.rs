//! kite-protocol: the pure part of kite. CloudEvent mapping and federation extensions,
//! signatures, scope globs, token formats and API error codes. No I/O, no async.

pub mod error;
pub mod event;
pub mod fed;
pub mod scope;
pub mod signature;
pub mod token;

pub use error::ApiError;
