//! The one place that runs `bindgen!`. Generated types stay behind the
//! capability modules and `runtime::invoke`; the rest of the host uses its own.

wasmtime::component::bindgen!({
    world: "runtime",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

pub use exports::neo::ops::check as check_export;
pub use exports::neo::ops::handler as handler_export;
pub use neo::ops::types::{Error as WitError, ErrorCode};

impl WitError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WitError {
            code,
            message: message.into(),
        }
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Denied, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
}
