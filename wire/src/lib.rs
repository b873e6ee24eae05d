//! kite-protocol: the pure part of kite. CloudEvent mapping and federation extensions,
//! signatures, scope globs, token formats and API error codes. No I/O, no async.

pub mod batch;
pub mod error;
pub mod event;
pub mod fed;
pub mod identity;
pub mod ids;
pub mod metrics;
pub mod peering;
mod pick;
pub mod provenance;
pub mod provider;
pub mod scope;
pub mod secret_box;
pub mod signature;
pub mod ssrf;
pub mod stream;
pub mod token;
pub mod trace;

pub use error::{ApiError, Code, ErrorBody};
