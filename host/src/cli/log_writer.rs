//! The process log's writer: every line goes through the one redaction
//! policy's log-line rules on its way to stderr, whoever logged it — the
//! host, a plugin, a backend's error quoting a DSN, a mail server's reply
//! naming a customer.

use std::io::Write;

/// Hands the log formatter a [`Redacting`] stderr for each event.
pub struct RedactedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = Redacting<std::io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting(std::io::stderr())
    }
}

/// Masks what it is given before writing it on. The formatter writes an
/// event whole, in one call, so a secret is never split between two.
pub struct Redacting<W>(pub W);

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let masked = neo_ops_text::redact::redact_log_line(&text, "****");
        self.0.write_all(masked.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_masked_on_its_way_out() {
        let mut out = Redacting(Vec::new());
        let line = "WARN smtp send failed error=\"550 <ann@a.example> unknown\" \
                    url=postgres://ops:hunter2@db/x\n";
        out.write_all(line.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "WARN smtp send failed error=\"550 <****@a.example> unknown\" \
             url=postgres://ops:****@db/x\n"
        );
    }
}
