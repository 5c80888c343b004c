//! Real protocol peers a test starts and reads back: an SMTP server and an
//! HTTP receiver for Slack-style webhooks.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A minimal SMTP server (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT). A
/// recipient whose address starts with `unknown` is refused for good (550).
pub struct SmtpSink {
    pub addr: SocketAddr,
    messages: Arc<Mutex<Vec<ReceivedMail>>>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let store = messages.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = session(stream, store).await;
                });
            }
        });
        Self { addr, messages }
    }

    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.messages.lock().unwrap().clone()
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<ReceivedMail>>>,
) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 test-smtp ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") {
            w.write_all(b"250-test-smtp\r\n250 8BITMIME\r\n").await?;
        } else if upper.starts_with("HELO") {
            w.write_all(b"250 test-smtp\r\n").await?;
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_string();
            to.clear();
            w.write_all(b"250 OK\r\n").await?;
        } else if upper.starts_with("RCPT TO:") {
            let rcpt = cmd[8..].trim().to_string();
            if rcpt.trim_start_matches('<').starts_with("unknown") {
                w.write_all(b"550 5.1.1 no such mailbox\r\n").await?;
                continue;
            }
            to.push(rcpt);
            w.write_all(b"250 OK\r\n").await?;
        } else if upper == "DATA" {
            w.write_all(b"354 go ahead\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                // Undo SMTP dot-stuffing.
                data.push_str(if line.starts_with("..") {
                    &line[1..]
                } else {
                    &line
                });
            }
            store.lock().unwrap().push(ReceivedMail {
                from: from.clone(),
                to: to.clone(),
                data,
            });
            w.write_all(b"250 OK queued\r\n").await?;
        } else if upper == "QUIT" {
            w.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if upper == "RSET" || upper == "NOOP" {
            w.write_all(b"250 OK\r\n").await?;
        } else {
            w.write_all(b"502 not implemented\r\n").await?;
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An HTTP server that records every request and answers with a set status,
/// after a set delay for paths under a set prefix.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    status: Arc<Mutex<u16>>,
    slow: Arc<Mutex<Option<(String, std::time::Duration)>>>,
}

impl HttpReceiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(Mutex::new(200u16));
        let slow = Arc::new(Mutex::new(None::<(String, std::time::Duration)>));
        let (store, st, sl) = (requests.clone(), status.clone(), slow.clone());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (store, st, sl) = (store.clone(), st.clone(), sl.clone());
                async move {
                    let delay = sl
                        .lock()
                        .unwrap()
                        .as_ref()
                        .filter(|(prefix, _)| uri.path().starts_with(prefix.as_str()))
                        .map(|(_, d)| *d);
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    store.lock().unwrap().push(ReceivedRequest {
                        method: method.to_string(),
                        path: uri.to_string(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                            .collect(),
                        body: body.to_vec(),
                    });
                    let code = *st.lock().unwrap();
                    (axum::http::StatusCode::from_u16(code).unwrap(), "ok")
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            requests,
            status,
            slow,
        }
    }

    /// Answers requests to paths under `prefix` only after `delay`.
    pub fn set_slow(&self, prefix: &str, delay: std::time::Duration) {
        *self.slow.lock().unwrap() = Some((prefix.to_string(), delay));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().unwrap().clone()
    }

    pub fn set_status(&self, status: u16) {
        *self.status.lock().unwrap() = status;
    }
}
