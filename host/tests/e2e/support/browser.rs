//! Real headless Chromium (Debian's `chromium`) and the HTTPS sites a
//! browser test serves: a self-signed certificate made per test with
//! `rcgen`, trusted by Chromium through its SPKI hash, and hyper servers
//! over `tokio-rustls` (a page origin, or a TLS front for neo-ops that says
//! `X-Forwarded-Proto: https` as a terminating proxy would).

use axum::body::Bytes;
use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use sha2::Digest;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use tokio_rustls::rustls;

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Where tests leave screenshots (an artefact, not committed).
pub fn artefacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The flags every run shares: headless, no sandbox (CI runs as root), a
/// throwaway profile (which `--ignore-certificate-errors-spki-list` needs),
/// and reports sent within a second instead of a minute.
fn base_command(profile: &Path, spki: Option<&str>) -> Command {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's chromium (.ci/run does)"
    );
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--short-reporting-delay",
        "--disable-background-networking",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(spki) = spki {
        cmd.arg(format!("--ignore-certificate-errors-spki-list={spki}"));
    }
    cmd
}

/// Chromium showing one page until dropped (killed then).
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn open(url: &str, spki: Option<&str>) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let child = base_command(profile.path(), spki)
            .arg(url)
            .spawn()
            .expect("starting chromium");
        Self {
            child,
            _profile: profile,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for `localhost` and `127.0.0.1`.
pub struct Certificate {
    config: Arc<rustls::ServerConfig>,
    /// Base64 SHA-256 of the SubjectPublicKeyInfo, as Chromium's
    /// `--ignore-certificate-errors-spki-list` takes it.
    pub spki: String,
}

impl Certificate {
    pub fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let spki = base64::engine::general_purpose::STANDARD
            .encode(sha2::Sha256::digest(key.public_key_der()));
        let der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            config: Arc::new(config),
            spki,
        }
    }
}

pub type Handler = Arc<
    dyn Fn(Request<Bytes>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// An HTTPS server on 127.0.0.1 answering every request with `handler`.
pub struct Site {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Site {
    pub async fn start(cert: &Certificate, handler: Handler) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.config.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, handler) = (acceptor.clone(), handler.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let handler = handler.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await?.to_bytes();
                                Ok::<_, hyper::Error>(
                                    handler(Request::from_parts(parts, body)).await,
                                )
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self { addr, task }
    }

    /// A TLS front for a neo-ops server at `backend`: every request passed
    /// on with `X-Forwarded-Proto: https` and the client's address in
    /// `X-Forwarded-For`, as a terminating proxy would.
    pub async fn front(cert: &Certificate, backend: SocketAddr) -> Self {
        let client = reqwest::Client::new();
        let handler: Handler = Arc::new(move |req: Request<Bytes>| {
            let client = client.clone();
            Box::pin(async move {
                let url = format!("http://{backend}{}", req.uri());
                let mut forward = client.request(req.method().clone(), url);
                for (name, value) in req.headers() {
                    if name != "host" {
                        forward = forward.header(name, value);
                    }
                }
                let resp = forward
                    .header("x-forwarded-proto", "https")
                    .header("x-forwarded-for", "127.0.0.1")
                    .body(req.into_body())
                    .send()
                    .await
                    .expect("neo-ops behind the front");
                let mut out = Response::builder().status(resp.status());
                for (name, value) in resp.headers() {
                    out = out.header(name, value);
                }
                let body = resp.bytes().await.unwrap_or_default();
                out.body(Full::new(body)).unwrap()
            })
        });
        Self::start(cert, handler).await
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}
