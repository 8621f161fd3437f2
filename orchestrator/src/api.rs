//! The REST handlers of ARCHITECTURE.md's table, and the API's JSON
//! shapes, one module per resource: `tenants` (and their `plans`),
//! `enrolment` (a tenant's join tokens and enrol), `workers` (with fleet
//! join tokens), `containers`, commands
//! on one container in `ops`, worker-wide views and image builds in
//! `images`, `orgs`, `members`, `audit`, `policies`, `decisions`; what the
//! container routes share to reach a worker is in `relay`.
//!
//! Request and response types here are the HTTP wire (camelCase); the
//! stored records live in `store`, and conversion happens in these modules
//! only. Every write is committed by the store before the handler answers.

pub mod allowlist;
pub mod audit;
pub mod containers;
pub mod decisions;
pub mod enrolment;
pub mod images;
pub mod members;
pub mod ops;
pub mod orgs;
pub mod peers;
pub mod plans;
pub mod policies;
mod relay;
pub mod tenants;
pub(crate) use relay::{detached, worker_error};
pub mod workers;

use crate::http::ApiError;

/// A human-given name: 1 to `max` bytes, no control characters.
fn check_name(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must be 1 to {max} bytes of printable text"
        )));
    }
    Ok(())
}
