//! The member view: one member's stage, segment, risk and the reasons behind
//! them, as the engine would judge the member at a given moment.
//!
//! - [`view`]: evaluates a stored member at a time (shared by both outlets)
//! - [`api`]: `GET /members/{member_id}` on the `http.listen` endpoint
//! - [`live`]: what the running pipeline owns, for the API's answers
//! - [`export`]: `churnwatch members export`, every member of a state directory
//!
//! Everything here reads state through the [`crate::state::Store`] trait and
//! judges members with the engine's own public functions
//! ([`crate::engine::judge`], [`crate::engine::risk_of`],
//! [`crate::engine::timer_checks`]), so the view agrees with the alerts.

pub mod api;
pub mod cli;
pub mod export;
pub mod live;
pub mod view;

pub use view::{MemberView, ViewError};
