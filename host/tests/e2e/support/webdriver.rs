//! Headless Chromium driven through WebDriver: Debian's `chromedriver` on a
//! free port and a `fantoccini` session, both ended on drop.

use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One browser session. `spki` trusts a test's self-signed certificate.
pub struct Session {
    pub client: Client,
    driver: Child,
}

impl Session {
    pub async fn start(width: u32, height: u32, spki: Option<&str>) -> Self {
        Self::start_with(width, height, spki, &[]).await
    }

    /// With the system's dark theme, as `prefers-color-scheme: dark` sees it.
    pub async fn start_dark(width: u32, height: u32) -> Self {
        Self::start_with(width, height, None, &["--force-dark-mode"]).await
    }

    async fn start_with(width: u32, height: u32, spki: Option<&str>, extra: &[&str]) -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists(),
            "{CHROMEDRIVER} is missing: install Debian's chromium-driver (.ci/run does)"
        );
        let port = super::alertmanager::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let mut args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            "--short-reporting-delay".into(),
            format!("--window-size={width},{height}"),
        ];
        if let Some(spki) = spki {
            args.push(format!("--ignore-certificate-errors-spki-list={spki}"));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut options = json!({"binary": super::browser::CHROMIUM, "args": args});
        if width < 500 {
            // A desktop window is at least 500 px wide: a phone's viewport
            // takes device emulation.
            options["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 1.0},
            });
        }
        let caps = json!({"browserName": "chrome", "goog:chromeOptions": options});
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if std::time::Instant::now() > deadline => {
                    panic!("no WebDriver session from {CHROMEDRIVER}: {e}")
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        };
        Self { client, driver }
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The page's visible text (`innerText` leaves out what CSS hides).
    pub async fn visible_text(&self) -> String {
        self.eval("return document.body.innerText;")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Saves a PNG of the viewport as `name` among the test artefacts.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = super::browser::artefacts().join(name);
        std::fs::write(&path, png).unwrap();
        path
    }

    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}
