//! Outgoing mail: SMTP through lettre, or `.eml` files in the data dir outbox.

use lettre::address::Envelope;
use lettre::message::header::{ContentTransferEncoding, ContentType};
use lettre::message::{Attachment, Body, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::path::PathBuf;
use std::time::Duration;

use crate::settings::SmtpSettings;

pub const MAIL_TIMEOUT: Duration = Duration::from_secs(20);

/// The slowest upload a message is given time for, in bytes per second
/// (512 kbit/s), on top of [`MAIL_TIMEOUT`].
const SLOWEST_UPLOAD: usize = 64 * 1024;

/// The longest sending a message of about `len` bytes may take. Past it
/// the send counts as failed and is tried again: a limit the upload alone
/// outruns (an 8 MiB export on a slow link) would send the message again
/// on every attempt and finish it never.
fn send_within(len: usize) -> Duration {
    MAIL_TIMEOUT + Duration::from_secs((len / SLOWEST_UPLOAD) as u64)
}

#[derive(Debug, Clone, Default)]
pub struct OutgoingAttachment {
    pub filename: String,
    pub content_type: String,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct OutgoingMail {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    pub attachments: Vec<OutgoingAttachment>,
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}

pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        host: String,
    },
    Outbox {
        dir: PathBuf,
        from: Mailbox,
    },
}

impl Mailer {
    pub fn new(smtp: Option<&SmtpSettings>, data_dir: &std::path::Path) -> anyhow::Result<Self> {
        match smtp {
            Some(s) => {
                let from = mailbox(&s.from).map_err(|e| anyhow::anyhow!("SMTP_FROM: {e}"))?;
                let mut builder = match s.port {
                    465 => AsyncSmtpTransport::<Tokio1Executor>::relay(&s.host)?,
                    587 => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&s.host)?,
                    _ => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&s.host)
                        .tls(other_port_tls(&s.host, s.user.is_some())?),
                }
                .port(s.port)
                .timeout(Some(MAIL_TIMEOUT));
                if !from.email.domain().contains('.') {
                    tracing::warn!(
                        from = %s.from,
                        "SMTP_FROM is a local address: receiving servers may reject or junk this mail; set SMTP_FROM to an address on your domain"
                    );
                }
                if let (Some(user), Some(pass)) = (&s.user, &s.pass) {
                    builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
                }
                Ok(Mailer::Smtp {
                    transport: builder.build(),
                    from,
                    host: format!("{}:{}", s.host, s.port),
                })
            }
            None => {
                let dir = data_dir.join("outbox");
                crate::private_fs::create_private_dir(&dir)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
                Ok(Mailer::Outbox {
                    dir,
                    from: "neo-ops <neo-ops@localhost>"
                        .parse()
                        .expect("static address"),
                })
            }
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Mailer::Smtp { .. } => "smtp",
            Mailer::Outbox { .. } => "outbox",
        }
    }

    /// Sends a message; returns its Message-ID.
    /// Takes the message by value: its bodies and attachments move into the
    /// built message rather than being copied (a 20 MiB attachment is not
    /// held twice).
    pub async fn send(&self, mail: OutgoingMail) -> Result<String, MailError> {
        let from = match self {
            Mailer::Smtp { from, .. } | Mailer::Outbox { from, .. } => from.clone(),
        };
        // On the sender's domain, as mail clients and filters expect.
        let domain = from.email.domain().to_string();
        let domain = if domain.contains('.') {
            domain
        } else {
            "neo-ops.invalid".to_string()
        };
        let message_id = format!("<{}@{domain}>", uuid::Uuid::new_v4().simple());
        let message = build(mail, from, &message_id)?;
        match self {
            Mailer::Smtp {
                transport, host, ..
            } => {
                let (envelope, raw) = (message.envelope(), message.formatted());
                match send_raw(transport, host, envelope, &raw).await {
                    Ok(()) => {}
                    // A recipient refused for good (no such mailbox, not
                    // local, a bad address): lettre stops at the first
                    // refused RCPT, so nobody had it.
                    Err(failed)
                        if failed.refused_for_good_with(&[550, 551, 553])
                            && envelope.to().len() > 1 =>
                    {
                        send_each(transport, host, envelope, &raw).await?;
                    }
                    Err(failed) => return Err(failed.error),
                }
                Ok(message_id)
            }
            Mailer::Outbox { dir, .. } => {
                let name = format!(
                    "{}-{}.eml",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
                    uuid::Uuid::new_v4().simple()
                );
                // The owner's alone (it names customers), durable before
                // it is renamed into place, and no half-written file left.
                let (dir, bytes) = (dir.clone(), message.formatted());
                let written = tokio::task::spawn_blocking(move || {
                    let tmp = dir.join(format!(".{name}.tmp"));
                    let written = crate::private_fs::write_private(&tmp, &bytes)
                        .and_then(|()| std::fs::rename(&tmp, dir.join(&name)));
                    match &written {
                        Ok(()) => crate::private_fs::sync_dir(&dir),
                        Err(_) => drop(std::fs::remove_file(&tmp)),
                    }
                    written
                })
                .await
                .map_err(std::io::Error::other)
                .and_then(|written| written);
                written.map_err(|e| MailError::Unavailable(format!("writing outbox: {e}")))?;
                Ok(message_id)
            }
        }
    }
}

/// How long mail stays in the outbox: it names customers (invoices,
/// exports), and on a node with no relay nothing else ever removes it.
pub const OUTBOX_KEPT: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);
/// A temporary outbox file older than this was left by a process that died
/// writing it.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(600);

impl Mailer {
    /// Deletes outbox mail older than [`OUTBOX_KEPT`] and temporary files a
    /// dead process left; how many went. Nothing with SMTP.
    pub async fn prune_outbox(&self) -> usize {
        let Mailer::Outbox { dir, .. } = self else {
            return 0;
        };
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || prune_outbox(&dir, std::time::SystemTime::now()))
            .await
            .unwrap_or(0)
    }
}

fn prune_outbox(dir: &std::path::Path, now: std::time::SystemTime) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let kept = match () {
            _ if name.starts_with('.') && name.ends_with(".tmp") => STALE_TMP,
            _ if name.ends_with(".eml") => OUTBOX_KEPT,
            _ => continue,
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age > kept));
        if old
            && entry.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// A send the server refused or that failed: the error as the plugin gets
/// it, and the server's reply code when it gave one.
struct Failed {
    error: MailError,
    code: Option<u16>,
}

impl Failed {
    /// Refused for good with one of `codes`.
    fn refused_for_good_with(&self, codes: &[u16]) -> bool {
        matches!(self.error, MailError::Invalid(_)) && self.code.is_some_and(|c| codes.contains(&c))
    }
}

/// Sends `raw` to `envelope`'s recipients, within [`send_within`] its size.
async fn send_raw(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    host: &str,
    envelope: &Envelope,
    raw: &[u8],
) -> Result<(), Failed> {
    let within = send_within(raw.len());
    match tokio::time::timeout(within, transport.send_raw(envelope, raw)).await {
        Ok(Ok(_)) => Ok(()),
        // The server's reply (which can quote credentials' fate or
        // addresses) and its name stay in the host's log.
        Ok(Err(e)) => {
            tracing::warn!(smtp = %host, error = %e, "smtp send failed");
            let error = match refused_for_good(&e) {
                true => MailError::Invalid(
                    "the mail server refused the message for good (details in the host log)".into(),
                ),
                false => MailError::Unavailable(
                    "the mail server refused the message or failed (details in the host log)"
                        .into(),
                ),
            };
            let code = e.status().map(u16::from);
            Err(Failed { error, code })
        }
        Err(_) => {
            tracing::warn!(smtp = %host, timeout = ?within, "smtp send timed out");
            let error = MailError::Unavailable(format!(
                "the mail server did not take the message within {within:?}"
            ));
            Err(Failed { error, code: None })
        }
    }
}

/// Sends `raw` to each of `envelope`'s recipients on its own, all within
/// one message's [`send_within`], after a recipient was refused for good:
/// one stale address in an alert list kept the alert from everyone. Fails,
/// naming who did not get it, unless all did: `invalid` when each of those
/// was refused for good (nobody gets it twice), else `unavailable`, and a
/// retry sends the others a second copy.
async fn send_each(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    host: &str,
    envelope: &Envelope,
    raw: &[u8],
) -> Result<(), MailError> {
    let give_up = tokio::time::Instant::now() + send_within(raw.len());
    let mut missed = Vec::new();
    let mut for_good = true;
    // An address in both To and Cc is in the envelope twice: one copy.
    let mut asked = std::collections::HashSet::new();
    for to in envelope.to().iter().filter(|to| asked.insert(*to)) {
        let one = Envelope::new(envelope.from().cloned(), vec![to.clone()]).expect("one recipient");
        let sent = tokio::time::timeout_at(give_up, send_raw(transport, host, &one, raw)).await;
        let refused = match sent {
            Ok(Ok(())) => continue,
            Ok(Err(failed)) => matches!(failed.error, MailError::Invalid(_)),
            Err(_) => false,
        };
        for_good &= refused;
        missed.push(to.to_string());
    }
    if missed.is_empty() {
        return Ok(());
    }
    let all = asked.len();
    tracing::warn!(smtp = %host, ?missed, "the message did not go to every recipient");
    let message = format!(
        "the mail server took the message for {} of {all} recipients, not for {} (details in the host log)",
        all - missed.len(),
        missed.join(", ")
    );
    Err(match for_good {
        true => MailError::Invalid(message),
        false => MailError::Unavailable(message),
    })
}

/// Whether the server refused the message itself, for good (550–553: no
/// such mailbox, too large), so sending it again would be refused again.
/// Other refusals are the deployment's and fixed there while the message
/// waits: other codes (a 554 also answers a greeting: "no service here"),
/// and 550–553 with a 5.7 enhanced status (relaying denied, sender not
/// verified), as Exchange, Gmail and SendGrid send.
fn refused_for_good(e: &lettre::transport::smtp::Error) -> bool {
    let about_the_message = e
        .status()
        .is_some_and(|code| matches!(u16::from(code), 550..=553));
    // Displayed as "permanent error (550): 5.7.1 Relaying denied".
    let shown = e.to_string();
    let policy = shown
        .split_once("): ")
        .is_some_and(|(_, said)| said.trim_start().starts_with("5.7."));
    about_the_message && !policy
}

/// How a port other than 465 (TLS from the start) and 587 (STARTTLS
/// required) is secured: STARTTLS whenever the server offers it (before,
/// never: messages and addresses went in the clear to a server that could
/// have taken them encrypted), and required when a password would cross a
/// network (a login to a server not on this machine).
fn other_port_tls(host: &str, login: bool) -> anyhow::Result<Tls> {
    let tls = TlsParameters::new(host.to_string())?;
    let on_this_machine = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    Ok(if login && !on_this_machine {
        Tls::Required(tls)
    } else {
        Tls::Opportunistic(tls)
    })
}

/// `Auto-Submitted: auto-generated`.
#[derive(Clone)]
struct AutoSubmitted;

impl lettre::message::header::Header for AutoSubmitted {
    fn name() -> lettre::message::header::HeaderName {
        lettre::message::header::HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> lettre::message::header::HeaderValue {
        lettre::message::header::HeaderValue::new(Self::name(), "auto-generated".into())
    }
}

/// An address as any mail server takes it: a domain that is not ASCII in
/// its IDNA (`xn--`) form. lettre keeps the domain as written, and then
/// refuses to send to a server without SMTPUTF8 (most relays, SES among
/// them): a tenant's `josé@café.example` owner failed every night.
fn mailbox(addr: &str) -> Result<Mailbox, MailError> {
    let bad =
        |why: &dyn std::fmt::Display| MailError::Invalid(format!("bad address \"{addr}\": {why}"));
    let parsed: Mailbox = addr.parse().map_err(|e| bad(&e))?;
    let domain = parsed.email.domain();
    if domain.is_ascii() {
        return Ok(parsed);
    }
    let ascii = idna::domain_to_ascii(domain)
        .map_err(|_| bad(&format!("\"{domain}\" is not a valid international domain")))?;
    let email = lettre::Address::new(parsed.email.user(), ascii).map_err(|e| bad(&e))?;
    Ok(Mailbox::new(parsed.name, email))
}

/// Text as a mail body may carry it: lettre puts a CR before each bare LF
/// but sends a lone CR or a NUL as it is, which servers refuse or read
/// otherwise (a lone CR ends a line for some; NUL is not allowed at all).
fn mail_text(text: String) -> String {
    if !text.contains(['\r', '\0']) {
        return text;
    }
    text.replace("\r\n", "\n")
        .replace('\r', "\n")
        .replace('\0', "")
}

fn build(mail: OutgoingMail, from: Mailbox, message_id: &str) -> Result<Message, MailError> {
    if mail.to.is_empty() {
        return Err(MailError::Invalid(
            "a message needs at least one recipient".into(),
        ));
    }
    let mut b = Message::builder()
        .from(from)
        .subject(mail.subject)
        .message_id(Some(message_id.to_string()))
        // Machine-sent (RFC 3834): out-of-office replies stay quiet.
        .header(AutoSubmitted);
    let to = mail
        .to
        .iter()
        .map(|a| mailbox(a))
        .collect::<Result<Vec<_>, _>>()?;
    let cc = mail
        .cc
        .iter()
        .map(|a| mailbox(a))
        .collect::<Result<Vec<_>, _>>()?;
    for mailbox in &to {
        b = b.to(mailbox.clone());
    }
    for mailbox in &cc {
        b = b.cc(mailbox.clone());
    }
    let text = mail_text(mail.text);
    let body = match mail.html {
        Some(html) => MultiPart::alternative_plain_html(text, mail_text(html)),
        None => MultiPart::mixed().singlepart(SinglePart::plain(text)),
    };
    let body = if mail.attachments.is_empty() {
        body
    } else {
        let mut mixed = MultiPart::mixed().multipart(body);
        for a in mail.attachments {
            let ct = ContentType::parse(&a.content_type).map_err(|_| {
                MailError::Invalid(format!("bad content type \"{}\"", a.content_type))
            })?;
            // Always base64: bytes sent as they are could go out as 7bit
            // with bare LFs (a CSV), which servers refuse (Postfix's
            // `smtpd_forbid_bare_newline`) or, where `LF . CR LF` ends the
            // data, read the rest as commands (SMTP smuggling).
            let data = Body::new_with_encoding(a.data, ContentTransferEncoding::Base64)
                .map_err(|_| MailError::Invalid("cannot encode an attachment".into()))?;
            mixed = mixed.singlepart(Attachment::new(a.filename).body(data, ct));
        }
        mixed
    };
    let mut message = b
        .multipart(body)
        .map_err(|e| MailError::Invalid(format!("cannot build message: {e}")))?;
    fold_addresses(&mut message, "To", &to);
    fold_addresses(&mut message, "Cc", &cc);
    Ok(message)
}

/// Sets the `name` header (`To`, `Cc`) to `list` folded after its commas.
/// lettre writes an address list as one line however long it is: about 35
/// recipients outgrow the 998 octets a line may have (RFC 5322 2.1.1), and
/// Exim refuses the message. The envelope is lettre's, already made.
fn fold_addresses(message: &mut Message, name: &'static str, list: &[Mailbox]) {
    use lettre::message::header::{HeaderName, HeaderValue, Headers, To};
    if list.len() < 2 {
        return;
    }
    // One address as lettre encodes it (a name quoted or in encoded
    // words, itself folded when long).
    let encoded = |mailbox: &Mailbox| {
        let mut one = Headers::new();
        one.set(To::from(lettre::message::Mailboxes::from(mailbox.clone())));
        let shown = one.to_string();
        shown["To: ".len()..shown.len() - "\r\n".len()].to_string()
    };
    let mut folded = String::new();
    let mut line = name.len() + ": ".len();
    for (i, mailbox) in list.iter().enumerate() {
        let one = encoded(mailbox);
        let first_line = one.split("\r\n").next().unwrap_or_default().len();
        if i > 0 {
            folded.push(',');
            line += 1;
            if line + 1 + first_line > 78 {
                folded.push_str("\r\n ");
                line = 1;
            } else {
                folded.push(' ');
                line += 1;
            }
        }
        folded.push_str(&one);
        line = match one.rsplit_once("\r\n") {
            Some((_, last)) => last.len(),
            None => line + one.len(),
        };
    }
    let raw = list.iter().map(ToString::to_string).collect::<Vec<_>>();
    message
        .headers_mut()
        .insert_raw(HeaderValue::dangerous_new_pre_encoded(
            HeaderName::new_from_ascii_str(name),
            raw.join(", "),
            folded,
        ));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mail` as it goes out from ops@example.com.
    fn built(mail: OutgoingMail) -> Message {
        build(
            mail,
            mailbox("ops@example.com").unwrap(),
            "<id@example.com>",
        )
        .unwrap()
    }

    /// What goes to the server is 7-bit lines ending in CRLF, whatever the
    /// plugin handed over: an attachment's bare LFs (and an `LF . CR LF`
    /// that some servers take for the end of the data), a lone CR or a NUL
    /// in the text never reach it; a domain that is not ASCII goes in its
    /// IDNA form, which a server without SMTPUTF8 takes.
    #[test]
    fn the_message_goes_out_in_lines_every_server_takes() {
        let mail = OutgoingMail {
            to: vec!["José <jose@café.example>".into()],
            subject: "s".into(),
            text: "one\rtwo\0three\n".into(),
            attachments: vec![OutgoingAttachment {
                filename: "orders.csv".into(),
                content_type: "text/csv".into(),
                data: b"a,b\n.\r\nMAIL FROM:<x@example.com>\n".to_vec(),
            }],
            ..Default::default()
        };
        let message = built(mail);
        let to: Vec<String> = message
            .envelope()
            .to()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(to, ["jose@xn--caf-dma.example"]);
        let raw = message.formatted();
        assert!(raw.is_ascii());
        for (i, b) in raw.iter().enumerate() {
            match b {
                b'\n' => assert_eq!(raw[i - 1], b'\r', "a bare LF at {i}"),
                b'\r' => assert_eq!(raw.get(i + 1), Some(&b'\n'), "a lone CR at {i}"),
                0 => panic!("a NUL at {i}"),
                _ => {}
            }
        }
        let text = String::from_utf8(raw).unwrap();
        assert!(text.contains("one\r\ntwothree\r\n"), "{text}");
        assert!(
            !text.contains("MAIL FROM"),
            "the attachment in base64: {text}"
        );
        assert!(text.contains("xn--caf-dma.example"), "{text}");
    }

    /// Sixty recipients, one with a name in encoded words and one with a
    /// comma in its name: the lists are folded between addresses, and
    /// unfolded name each address once, in order.
    #[test]
    fn a_long_address_list_is_folded() {
        let mut to: Vec<String> = (0..60)
            .map(|i| format!("owner{i}@outlet{i}.example"))
            .collect();
        to[7] = "Zoë Åström-Ñúñez de la Fuente <zoe@example.com>".into();
        to[8] = "\"Kitchen, night shift\" <kitchen@example.com>".into();
        let mail = OutgoingMail {
            to: to.clone(),
            cc: to[..3].to_vec(),
            subject: "s".into(),
            text: "t".into(),
            ..Default::default()
        };
        let message = built(mail);
        assert_eq!(message.envelope().to().len(), 63);
        let raw = String::from_utf8(message.formatted()).unwrap();
        let head = raw.split("\r\n\r\n").next().unwrap();
        // At most 998 octets a line (RFC 5322's must); 78 (its should) but
        // for one address whose encoded name alone takes 78.
        let long: Vec<&str> = head.split("\r\n").filter(|l| l.len() > 78).collect();
        assert!(long.iter().all(|l| l.len() <= 998), "{long:?}");
        assert!(
            long.len() <= 1 && long.iter().all(|l| l.contains("zoe@")),
            "{long:?}"
        );
        assert!(head.matches("\r\n ").count() > 20, "folded: {head}");
        let unfolded = head.replace("\r\n ", " ");
        let list = |name: &str| {
            let line = unfolded
                .split("\r\n")
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name}in {head}"));
            line.split(", ").count()
        };
        // lettre writes a name with a comma in encoded words: no comma
        // shows but the separators.
        assert_eq!(list("To: "), 60, "{head}");
        assert_eq!(list("Cc: "), 3, "{head}");
        for i in [0, 30, 59] {
            assert!(unfolded.contains(&format!("owner{i}@outlet{i}.example")));
        }
        assert!(unfolded.contains("?= <kitchen@example.com>"), "{head}");
        assert!(unfolded.contains("=?utf-8?"), "the name in encoded words");
    }

    #[test]
    fn a_large_message_has_time_to_upload() {
        assert_eq!(send_within(1000), MAIL_TIMEOUT);
        assert_eq!(
            send_within(8 << 20),
            MAIL_TIMEOUT + Duration::from_secs(128)
        );
    }

    #[test]
    fn a_login_to_another_machine_requires_tls() {
        let required = |host: &str, login: bool| {
            matches!(other_port_tls(host, login).unwrap(), Tls::Required(_))
        };
        assert!(required("smtp.example.com", true));
        assert!(!required("smtp.example.com", false), "offered, taken");
        for local in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            assert!(!required(local, true), "{local}");
        }
    }

    /// Sends one message to an SMTP peer on this machine that answers each
    /// command with `answer` (`None`: 250); returns the result and the
    /// commands the peer heard.
    async fn send_to_peer(
        answer: fn(&str) -> Option<&'static str>,
    ) -> (Result<String, MailError>, Vec<String>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let peer = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 peer ESMTP\r\n").await.unwrap();
            let mut heard = Vec::new();
            let mut line = String::new();
            while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                let command = line.trim_end().to_ascii_uppercase();
                let reply = answer(&command).unwrap_or("250 OK\r\n");
                heard.push(command);
                if w.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
                line.clear();
            }
            heard
        });
        let settings = SmtpSettings {
            host: "127.0.0.1".into(),
            port,
            user: None,
            pass: None,
            from: "ops@example.com".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mailer = Mailer::new(Some(&settings), dir.path()).unwrap();
        let mail = OutgoingMail {
            to: vec!["owner@example.com".into()],
            subject: "s".into(),
            text: "t".into(),
            ..Default::default()
        };
        let sent = mailer.send(mail).await;
        drop(mailer);
        (sent, peer.await.unwrap())
    }

    /// A server on another port that offers STARTTLS gets it asked for
    /// before any message is sent; one that then cannot start TLS gets no
    /// message in the clear.
    #[tokio::test]
    async fn starttls_is_asked_for_when_offered() {
        let (sent, heard) = send_to_peer(|command| match command {
            c if c.starts_with("EHLO") => Some("250-peer\r\n250 STARTTLS\r\n"),
            "STARTTLS" => Some("454 4.7.0 TLS not available now\r\n"),
            _ => None,
        })
        .await;
        assert!(sent.is_err());
        assert!(heard.iter().any(|c| c == "STARTTLS"), "{heard:?}");
        assert!(
            !heard.iter().any(|c| c.starts_with("MAIL FROM")),
            "{heard:?}"
        );
    }

    /// A 550 about the mailbox is the message's for good; a 550 5.7 about
    /// relaying or the sender is the deployment's, and the message waits.
    #[tokio::test]
    async fn a_relay_refusal_is_not_the_message_s_fault() {
        let (sent, _) = send_to_peer(|command| {
            command
                .starts_with("RCPT")
                .then_some("550 5.1.1 no such mailbox\r\n")
        })
        .await;
        assert!(matches!(sent, Err(MailError::Invalid(_))), "{sent:?}");
        let (sent, _) = send_to_peer(|command| {
            command
                .starts_with("RCPT")
                .then_some("550 5.7.1 Unable to relay\r\n")
        })
        .await;
        assert!(matches!(sent, Err(MailError::Unavailable(_))), "{sent:?}");
    }

    /// What the CLI and the export plugin accept as an address, the mailer
    /// takes: a stored owner address never fails every digest afterwards.
    #[test]
    fn every_plain_address_is_one_the_mailer_takes() {
        for address in neo_ops_text::address::PLAIN_SAMPLES {
            assert!(mailbox(address).is_ok(), "{address}");
        }
    }
}
