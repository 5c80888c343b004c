//! Guest-side SDK for neo-ops plugins: the WIT bindings (generated once, here),
//! the [`Plugin`] trait (a method per trigger), and the helpers every plugin
//! would otherwise write again — replies in the `ok` envelope, request and
//! command-line parsing, config, tenants, audit records, rows by column
//! name, timestamps.

pub mod bindings {
    wit_bindgen::generate!({
        world: "plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "neo_ops_sdk::bindings",
    });
    #[doc(hidden)]
    pub use export_handler as export_plugin;
}

pub mod check_bindings {
    wit_bindgen::generate!({
        world: "check-plugin",
        path: "../../wit",
        with: {
            "neo:ops/types@0.1.0": crate::bindings::neo::ops::types,
            "neo:ops/db@0.1.0": crate::bindings::neo::ops::db,
            "neo:ops/kv@0.1.0": crate::bindings::neo::ops::kv,
            "neo:ops/mail@0.1.0": crate::bindings::neo::ops::mail,
            "neo:ops/outbound-http@0.1.0": crate::bindings::neo::ops::outbound_http,
            "neo:ops/log@0.1.0": crate::bindings::neo::ops::log,
            "neo:ops/audit@0.1.0": crate::bindings::neo::ops::audit,
            "neo:ops/config@0.1.0": crate::bindings::neo::ops::config,
            "neo:ops/host-info@0.1.0": crate::bindings::neo::ops::host_info,
            "neo:ops/queue@0.1.0": crate::bindings::neo::ops::queue,
            "neo:ops/files@0.1.0": crate::bindings::neo::ops::files,
        },
        pub_export_macro: true,
        export_macro_name: "export_check_raw",
        default_bindings_module: "neo_ops_sdk::check_bindings",
    });
    #[doc(hidden)]
    pub use export_check_raw as export_check;
}

/// The allocator of a plugin built without WASI: an arena, then `dlmalloc`
/// (see `allocator.rs`). `std`'s own allocator for this target grows memory
/// on its first allocation.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
#[global_allocator]
static ALLOCATOR: allocator::FirstBump<dlmalloc::GlobalDlmalloc, { allocator::ARENA_BYTES }> =
    allocator::FirstBump::new(dlmalloc::GlobalDlmalloc);

#[cfg(any(test, all(target_arch = "wasm32", target_os = "unknown")))]
mod allocator;
pub mod args;
pub mod audit;
pub mod backends;
pub mod config;
#[cfg(feature = "days")]
pub mod days;
pub mod fan_out;
pub mod file_reader;
pub mod html;
#[doc(hidden)]
pub mod panic_hook;
pub mod plugin;
mod request;
/// What counts as one plain mail address (the CLI uses it too).
pub use neo_ops_text::address;
/// The duration grammar the manifest uses too.
pub use neo_ops_text::duration;
/// The redaction policy the host uses too (crate `neo-ops-text`).
pub use neo_ops_text::redact;
pub mod reply;
pub mod rows;
pub mod tenants;
pub mod time;

pub use bindings::exports::neo::ops::handler::{
    Failure, HttpRequest, Invocation, Output, QueueMessage, ScheduleEvent, Trigger,
};
pub use bindings::neo::ops::types::{Error, ErrorCode};
pub use bindings::neo::ops::{db, files, host_info, kv, log, mail, outbound_http, queue};
pub use check_bindings::exports::neo::ops::check::{
    Guest as Check, Outcome as CheckOutcome, Status as CheckStatus,
};
pub use plugin::Plugin;
pub use serde_json;

/// Logs at info level with no fields.
pub fn info(message: &str) {
    log::log(log::Level::Info, message, &[]);
}

/// Logs at warn level with no fields.
pub fn warn(message: &str) {
    log::log(log::Level::Warn, message, &[]);
}

/// Logs at debug level with no fields.
pub fn debug(message: &str) {
    log::log(log::Level::Debug, message, &[]);
}
