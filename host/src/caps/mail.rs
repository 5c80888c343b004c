//! `neo:ops/mail`: send mail when the manifest grants `mail = true`.

use crate::backends::mail::{MailError, OutgoingAttachment, OutgoingMail};
use crate::bindings::neo::ops::mail as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::state::StoreState;

/// Largest message (bodies plus attachments) a plugin may send.
const MAX_MESSAGE: usize = 20 << 20;

impl wit::Host for StoreState {
    async fn send(&mut self, message: wit::Message) -> Result<String, WitError> {
        let plugin = &self.call.plugin;
        if !plugin.grants.mail {
            tracing::warn!(plugin = %plugin.name, "mail denied");
            return Err(WitError::denied(format!(
                "plugin \"{}\" has no mail grant",
                plugin.name
            )));
        }
        // Every part the host holds a copy of, headers included.
        let size = message.subject.len()
            + message
                .to
                .iter()
                .chain(&message.cc)
                .map(String::len)
                .sum::<usize>()
            + message.text.len()
            + message.html.as_ref().map_or(0, String::len)
            + message
                .attachments
                .iter()
                .map(|a| a.data.len() + a.filename.len() + a.content_type.len())
                .sum::<usize>();
        if size > MAX_MESSAGE {
            return Err(WitError::invalid(format!(
                "message of {size} bytes exceeds {MAX_MESSAGE}"
            )));
        }
        let mail = OutgoingMail {
            to: message.to,
            cc: message.cc,
            subject: message.subject,
            text: message.text,
            html: message.html,
            attachments: message
                .attachments
                .into_iter()
                .map(|a| OutgoingAttachment {
                    filename: a.filename,
                    content_type: a.content_type,
                    data: a.data,
                })
                .collect(),
        };
        let recipients = mail.to.len() + mail.cc.len();
        let request_id = &self.call.request_id;
        let id = self.call.services.mail.send(mail).await.map_err(|e| {
            // The backend logged the server's reply; this line ties it
            // to the plugin and the request.
            tracing::warn!(plugin = %plugin.name, %request_id, error = %e, "mail not sent");
            match e {
                MailError::Invalid(m) => WitError::new(ErrorCode::Invalid, m),
                MailError::Unavailable(m) => WitError::new(ErrorCode::Unavailable, m),
            }
        })?;
        tracing::info!(plugin = %plugin.name, request_id = %self.call.request_id, message_id = %id, recipients, "mail sent");
        Ok(id)
    }
}
