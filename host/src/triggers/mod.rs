//! The four ways a plugin is invoked. Each builds a [`crate::runtime::Invocation`]
//! and calls [`crate::runtime::Runtime::invoke`]; nothing else reaches a plugin.

pub mod admin_api;
pub mod body;
pub mod command;
pub mod deadline;
pub mod http;
pub mod queue;
pub mod request_id;
pub mod schedule;
pub mod supervise;

/// A fresh request id for invocations that do not bring one.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
