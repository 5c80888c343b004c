//! `neo:ops/mail`: send mail when the manifest grants `mail = true`.

use crate::backends::mail::{MailError, OutgoingAttachment, OutgoingMail};
use crate::bindings::neo::ops::mail as wit;
use crate::bindings::{ErrorCode, WitError};
use crate::caps::state::StoreState;

/// Largest message (bodies plus attachments) a plugin may send.
const MAX_MESSAGE: usize = 20 << 20;
/// Most recipients (to and cc) and attachments of one message: each is a
/// command to the server or a part the host builds, whatever its bytes.
const MAX_RECIPIENTS: usize = 100;
const MAX_ATTACHMENTS: usize = 50;
/// What a part or an address costs the host beyond its bytes (headers,
/// the part's structure), counted against [`MAX_MESSAGE`].
const PER_ITEM: usize = 256;

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
        refuse_oversized(&message)?;
        let recipients = message.to.len() + message.cc.len();
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

/// Refuses a message larger than the host builds and sends: too many
/// recipients or attachments, or too many bytes in all.
fn refuse_oversized(message: &wit::Message) -> Result<(), WitError> {
    let recipients = message.to.len() + message.cc.len();
    if recipients > MAX_RECIPIENTS {
        return Err(WitError::invalid(format!(
            "{recipients} recipients exceed {MAX_RECIPIENTS}"
        )));
    }
    if message.attachments.len() > MAX_ATTACHMENTS {
        return Err(WitError::invalid(format!(
            "{} attachments exceed {MAX_ATTACHMENTS}",
            message.attachments.len()
        )));
    }
    // Every part the host holds a copy of, headers included.
    let size = (recipients + message.attachments.len()) * PER_ITEM
        + message.subject.len()
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(recipients: usize, attachments: usize, bytes: usize) -> wit::Message {
        wit::Message {
            to: vec!["owner@example.com".into(); recipients],
            cc: vec![],
            subject: "s".into(),
            text: "x".repeat(bytes),
            html: None,
            attachments: vec![
                wit::Attachment {
                    filename: String::new(),
                    content_type: "a/b".into(),
                    data: vec![],
                };
                attachments
            ],
        }
    }

    /// Counted by what the host builds, not only by bytes: a million empty
    /// attachments came to 3 MB of "bytes" and far more of host memory.
    #[test]
    fn a_message_is_bounded_by_its_parts_as_well_as_its_bytes() {
        assert!(refuse_oversized(&message(100, 50, 1 << 20)).is_ok());
        let err = refuse_oversized(&message(101, 0, 0)).unwrap_err();
        assert_eq!(err.message, "101 recipients exceed 100");
        let err = refuse_oversized(&message(1, 1_500_000, 0)).unwrap_err();
        assert_eq!(err.message, "1500000 attachments exceed 50");
        let err = refuse_oversized(&message(1, 0, 20 << 20)).unwrap_err();
        assert!(
            err.message.ends_with("bytes exceeds 20971520"),
            "{}",
            err.message
        );
    }
}
