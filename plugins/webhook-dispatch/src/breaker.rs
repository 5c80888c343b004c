//! A circuit breaker per (tenant, endpoint), kept in kv so every replica sees
//! the same state. Closed: requests go out and consecutive failures are
//! counted. At the threshold the circuit opens for the cooldown and requests
//! fail fast. After the cooldown one trial request (half-open) goes out: success
//! closes the circuit, failure keeps it open for another cooldown. Each
//! transition is recorded in `webhook_breaker_events`, one `open` row per
//! opening (the owner digest and preflight count them): a trial that fails
//! is its `half_open` row with no `close` after it, not another opening, so
//! an hour's outage is one pause, not sixty (and one `half_open` row: the
//! latest trial's). Transitions are kept for 90 days.

use crate::settings::Settings;
use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::{Error, kv, log};

/// Failure counts fade after an hour without failures.
const FAILURE_WINDOW_MS: u64 = 3_600_000;
/// An open circuit nobody touches for a week is forgotten (closed silently).
const OPEN_STATE_TTL_MS: u64 = 7 * 24 * 3_600_000;
/// How long transitions are kept: past any digest's or check's window.
const EVENTS_KEPT_MICROS: i64 = 90 * 24 * 3_600_000_000;

pub struct Breaker<'a> {
    pub tenant: &'a str,
    pub endpoint_id: i64,
    pub settings: &'a Settings,
}

/// What the breaker allows for one attempt.
pub enum Gate {
    /// Closed: send.
    Closed,
    /// Half-open: this attempt holds the single trial (a kv lock token).
    Trial(String),
    /// Open: fail without sending.
    Open,
}

impl Breaker<'_> {
    fn key(&self, part: &str) -> String {
        format!(
            "webhook:breaker:{}:{}:{part}",
            self.tenant, self.endpoint_id
        )
    }

    /// Decides whether this attempt may send.
    pub fn gate(&self, now_micros: i64) -> Result<Gate, Error> {
        let Some(raw) = kv::get(&self.key("open_until"))? else {
            return Ok(Gate::Closed);
        };
        let open_until = std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(i64::MAX);
        if now_micros < open_until {
            return Ok(Gate::Open);
        }
        // Cooldown over: exactly one attempt, on any replica, gets the trial.
        let trial_ttl = u64::from(self.settings.request_timeout_ms) + 10_000;
        match kv::lock(&self.key("trial"), trial_ttl)? {
            Some(token) => {
                self.record("half_open", now_micros);
                Ok(Gate::Trial(token))
            }
            None => Ok(Gate::Open),
        }
    }

    /// A request went through: close a half-open circuit, reset the count.
    pub fn succeeded(&self, gate: Gate, now_micros: i64) {
        if let Gate::Trial(token) = gate {
            self.try_kv("closing", kv::delete(&self.key("open_until")).map(drop));
            self.record("close", now_micros);
            self.release_trial(&token);
        }
        self.try_kv("resetting", kv::delete(&self.key("failures")).map(drop));
    }

    /// A request failed: keep a half-open circuit open, or count towards opening.
    pub fn failed(&self, gate: Gate, now_micros: i64) {
        match gate {
            Gate::Trial(token) => {
                self.hold_open(now_micros);
                self.release_trial(&token);
            }
            // Sent before the circuit opened (another worker's failure
            // opened it meanwhile): part of the same outage, not a count
            // towards the next opening.
            Gate::Closed if matches!(kv::get(&self.key("open_until")), Ok(Some(_))) => {}
            Gate::Closed => match kv::incr(&self.key("failures"), 1) {
                // The failure that reaches the threshold opens (and resets
                // the count). Past it too: a count left over (its reset
                // lost in a kv blip, or the threshold lowered meanwhile)
                // would otherwise never open again. Two failures at once
                // past the threshold may record two openings.
                Ok(n) if n >= self.settings.breaker_threshold => {
                    self.open(now_micros);
                    self.try_kv("resetting", kv::delete(&self.key("failures")).map(drop));
                }
                Ok(_) => self.try_kv(
                    "counting",
                    kv::expire(&self.key("failures"), FAILURE_WINDOW_MS).map(drop),
                ),
                Err(e) => self.try_kv("counting", Err(e)),
            },
            Gate::Open => {}
        }
    }

    fn open(&self, now_micros: i64) {
        self.hold_open(now_micros);
        self.record("open", now_micros);
        log::log(
            log::Level::Warn,
            "webhook circuit opened",
            &[
                ("tenant".into(), self.tenant.to_string()),
                ("endpoint".into(), self.endpoint_id.to_string()),
                (
                    "cooldown_ms".into(),
                    self.settings.breaker_cooldown_ms.to_string(),
                ),
            ],
        );
    }

    /// Opens (or keeps open) the circuit for one cooldown from now.
    fn hold_open(&self, now_micros: i64) {
        let until = now_micros.saturating_add(self.settings.breaker_cooldown_ms as i64 * 1000);
        let set = kv::set(
            &self.key("open_until"),
            until.to_string().as_bytes(),
            Some(OPEN_STATE_TTL_MS),
        );
        self.try_kv("opening", set);
    }

    fn release_trial(&self, token: &str) {
        self.try_kv(
            "releasing trial",
            kv::unlock(&self.key("trial"), token).map(drop),
        );
    }

    /// Appends a transition, first pruning the endpoint's events past
    /// [`EVENTS_KEPT_MICROS`] and, for a trial, the earlier failed trials of
    /// the same outage: an endpoint down for weeks adds a trial each
    /// cooldown, and only its openings are counted. Bookkeeping never
    /// changes a delivery's outcome, so a failure here is logged, not
    /// returned.
    fn record(&self, event: &str, now_micros: i64) {
        let target = format!("tenant:{}", self.tenant);
        let endpoint = Value::Int(self.endpoint_id);
        let cutoff = Value::Timestamp(now_micros.saturating_sub(EVENTS_KEPT_MICROS));
        let pruned = db::execute(
            &target,
            "DELETE FROM webhook_breaker_events WHERE endpoint_id = $1 AND (at < $2 OR \
             ($3 AND event = 'half_open' AND id > (SELECT COALESCE(MAX(id), 0) \
             FROM webhook_breaker_events WHERE endpoint_id = $1 AND event <> 'half_open')))",
            &[
                endpoint.clone(),
                cutoff,
                Value::Boolean(event == "half_open"),
            ],
        );
        if let Err(e) = pruned {
            self.warn(&format!("pruning breaker events failed: {}", e.message));
        }
        let inserted = db::execute(
            &target,
            "INSERT INTO webhook_breaker_events (endpoint_id, event, at) VALUES ($1, $2, $3)",
            &[endpoint, Value::from(event), Value::Timestamp(now_micros)],
        );
        if let Err(e) = inserted {
            self.warn(&format!(
                "recording breaker event \"{event}\" failed: {}",
                e.message
            ));
        }
    }

    fn try_kv(&self, what: &str, result: Result<(), Error>) {
        if let Err(e) = result {
            self.warn(&format!("breaker state: {what} failed: {}", e.message));
        }
    }

    fn warn(&self, message: &str) {
        log::log(
            log::Level::Warn,
            message,
            &[
                ("tenant".into(), self.tenant.to_string()),
                ("endpoint".into(), self.endpoint_id.to_string()),
            ],
        );
    }
}
