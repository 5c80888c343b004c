//! Per-channel results, as text or JSON.

use neo_ops_sdk::serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failed,
    Skipped,
    DryRun,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::DryRun => "dry-run",
        }
    }
}

pub struct ChannelResult {
    pub channel: &'static str,
    pub status: Status,
    pub detail: String,
    /// What would have been sent (dry runs only).
    pub payload: Option<Value>,
}

impl ChannelResult {
    pub fn from_send(channel: &'static str, sent: Result<String, String>) -> Self {
        let (status, detail) = match sent {
            Ok(d) => (Status::Ok, d),
            Err(d) => (Status::Failed, d),
        };
        Self {
            channel,
            status,
            detail,
            payload: None,
        }
    }

    pub fn skipped(channel: &'static str, reason: String) -> Self {
        Self {
            channel,
            status: Status::Skipped,
            detail: reason,
            payload: None,
        }
    }

    pub fn dry_run(channel: &'static str, detail: String, payload: Value) -> Self {
        Self {
            channel,
            status: Status::DryRun,
            detail,
            payload: Some(payload),
        }
    }
}

pub struct Report<'a> {
    pub message: &'a str,
    pub id: &'a str,
    pub results: Vec<ChannelResult>,
}

impl Report<'_> {
    pub fn failed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|r| r.status == Status::Failed)
            .map(|r| r.channel)
            .collect()
    }

    pub fn text(&self) -> String {
        let mut out = format!("test alert \"{}\" (id {})\n", self.message, self.id);
        for r in &self.results {
            out.push_str(&format!(
                "{}: {}: {}\n",
                r.channel,
                r.status.as_str(),
                r.detail
            ));
            if let Some(p) = &r.payload {
                out.push_str(&format!("  payload: {p}\n"));
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        let channels: Vec<Value> = self
            .results
            .iter()
            .map(|r| {
                let mut c =
                    json!({"channel": r.channel, "status": r.status.as_str(), "detail": r.detail});
                if let Some(p) = &r.payload {
                    c["payload"] = p.clone();
                }
                c
            })
            .collect();
        json!({
            "ok": self.failed().is_empty(),
            "message": self.message,
            "id": self.id,
            "channels": channels,
        })
    }
}
