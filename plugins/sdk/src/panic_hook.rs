//! A plugin's panic message, sent to the host through `log`: plugins are
//! built without WASI, so there is no stderr for `std`'s default hook. The
//! host logs it with the plugin and request id, and reports it as the
//! invocation's crash reason.

use std::sync::Once;

/// Installs the hook; the export macros call it on entry.
pub fn install() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let place = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                .unwrap_or_else(|| "an unknown place".into());
            let message = info.payload_as_str().unwrap_or("(no message)");
            crate::log::log(
                crate::log::Level::Error,
                &format!("plugin panicked at {place}:\n{message}"),
                &[],
            );
        }));
    });
}
