//! Sending one tenant's digest for one day, at most once: a kv lock keeps
//! replicas from racing, and `digest_sends` (master) is the send log.

use crate::render::{self, Heading};
use crate::{Outcome, Skip, figures};
use chrono::NaiveDate;
use neo_ops_sdk::days::Range;
use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::tenants::Tenant;
use neo_ops_sdk::{Failure, kv, log, mail, reply, time};

pub struct Job<'a> {
    pub tenant: &'a Tenant,
    pub day: NaiveDate,
    /// `HH:MM` local when the day is today: the figures stop there.
    pub until: Option<String>,
    pub range: Range,
    /// The same weekday a week earlier.
    pub last_week: Range,
    pub top_n: i64,
    pub lock_ttl_ms: u64,
    /// Run by hand: skipped once any digest of the day went. A send of a
    /// day not yet over (by hand, or the schedule's "so far") is recorded
    /// as covering the day until the range's end only, so a later cut (the
    /// evening's slot after a send by hand at 03:00) still goes: a
    /// scheduled run skips only a send that covered at least its own cut.
    pub by_hand: bool,
}

impl Job<'_> {
    fn target(&self) -> String {
        format!("tenant:{}", self.tenant.name)
    }

    fn heading(&self) -> Heading<'_> {
        Heading {
            tenant: &self.tenant.name,
            display_name: &self.tenant.display_name,
            day: self.day,
            until: self.until.as_deref(),
            zone: &self.tenant.time_zone,
        }
    }

    /// Figures and the text body, with nothing sent or recorded.
    pub fn preview(&self) -> Result<Outcome, Failure> {
        let digest = self.figures()?;
        let text = render::text(&self.heading(), &digest);
        Ok(Outcome::Preview {
            to: self.tenant.owner_email.clone(),
            digest,
            text,
        })
    }

    /// Sends the digest unless it was already sent or another replica is on it.
    pub fn send_once(&self) -> Result<Outcome, Failure> {
        let Some(to) = self.tenant.owner_email.as_deref() else {
            self.warn("no owner email; digest skipped");
            return Ok(Outcome::Skipped(Skip::NoOwnerEmail));
        };
        let key = format!("digest:{}:{}", self.tenant.name, self.day);
        let Some(token) = kv::lock(&key, self.lock_ttl_ms)? else {
            return Ok(Outcome::Skipped(Skip::Elsewhere));
        };
        let outcome = self.send_locked(to);
        if let Err(e) = kv::unlock(&key, &token) {
            // The lock expires by itself; the send log already prevents a repeat.
            self.warn(&format!("releasing lock \"{key}\" failed: {}", e.message));
        }
        outcome
    }

    fn send_locked(&self, to: &str) -> Result<Outcome, Failure> {
        if self.already_sent()? {
            return Ok(Outcome::Skipped(Skip::AlreadySent));
        }
        let digest = self.figures()?;
        let heading = self.heading();
        let message = mail::Message {
            to: vec![to.to_string()],
            cc: vec![],
            subject: render::subject(&heading),
            text: render::text(&heading, &digest),
            html: Some(render::html(&heading, &digest)),
            attachments: vec![],
        };
        let message_id = mail::send(&message).map_err(|e| {
            self.failure(
                reply::status_of(e.code),
                format!(
                    "was not sent: {} (nothing recorded; the next run or retry sends it)",
                    e.message
                ),
            )
        })?;
        if let Err(e) = self.record(&message_id) {
            return Ok(Outcome::SentUnrecorded(self.failure(
                500,
                format!(
                    "was sent as {message_id} but recording it failed: {} (a later run may send it again)",
                    e.message
                ),
            )));
        }
        Ok(Outcome::Sent {
            to: to.to_string(),
            message_id,
            digest,
            early: self.partial(),
        })
    }

    fn figures(&self) -> Result<figures::Digest, Failure> {
        figures::collect(&self.target(), self.range, self.last_week, self.top_n).map_err(|e| {
            self.failure(
                reply::status_of(e.code),
                format!("could not be computed: {}", e.message),
            )
        })
    }

    /// A send by hand of a day not yet over.
    fn partial(&self) -> bool {
        self.by_hand && self.until.is_some()
    }

    fn already_sent(&self) -> Result<bool, Failure> {
        let mut params = self.key_params();
        let covered = if self.by_hand {
            ""
        } else {
            params.push(Value::Timestamp(self.range.end));
            // A send covers its day up to its cut, or, with none recorded,
            // up to when it was made: a whole day's went after the day
            // ended, while a "so far" row an older version left without a
            // cut does not stand in for the whole day.
            " AND COALESCE(covered_until, sent_at) >= $3"
        };
        let rows = db::query(
            "master",
            &format!(
                "SELECT sent_at FROM digest_sends WHERE tenant = $1 AND business_day = $2 \
                 AND sent_at IS NOT NULL{covered}"
            ),
            &params,
        )?;
        Ok(!rows.rows.is_empty())
    }

    fn record(&self, message_id: &str) -> Result<u64, neo_ops_sdk::Error> {
        let mut params = self.key_params();
        params.push(Value::Timestamp(time::now_micros()));
        params.push(Value::from(message_id));
        // A day not over is covered up to its cut (the slot's time, or the
        // moment a run by hand looked), not up to the sender's clock: a
        // replica whose clock lags must not make a retry of the same slot
        // look uncovered. A whole day is NULL.
        params.push(if self.until.is_some() {
            Value::Timestamp(self.range.end)
        } else {
            Value::Null
        });
        db::execute(
            "master",
            "INSERT INTO digest_sends (tenant, business_day, sent_at, message_id, covered_until) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, business_day) \
             DO UPDATE SET sent_at = excluded.sent_at, message_id = excluded.message_id, \
             covered_until = excluded.covered_until",
            &params,
        )
    }

    fn key_params(&self) -> Vec<Value> {
        vec![
            Value::from(self.tenant.name.as_str()),
            Value::from(self.day.to_string()),
        ]
    }

    fn failure(&self, status: u16, what: String) -> Failure {
        reply::fail(
            status,
            format!(
                "digest for tenant \"{}\" ({}) {what}",
                self.tenant.name, self.day
            ),
        )
    }

    fn warn(&self, message: &str) {
        log::log(
            log::Level::Warn,
            message,
            &[
                ("tenant".into(), self.tenant.name.clone()),
                ("business_day".into(), self.day.to_string()),
            ],
        );
    }
}
