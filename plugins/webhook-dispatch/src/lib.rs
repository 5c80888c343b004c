//! Webhook dispatcher: consumes the `webhook` queue. A job `{"delivery_id": N}`
//! carries its tenant; the delivery and its endpoint come from that tenant's
//! database. The payload is POSTed signed with the endpoint's secret
//! (`x-neo-signature: sha256=HMAC(secret, "<timestamp>.<body>")`).
//!
//! - Already delivered: acknowledged without sending, so duplicates and
//!   replays deliver exactly once (a per-delivery kv lock keeps two workers
//!   from sending the same delivery at the same time).
//! - Any failure (non-2xx, transport error, open circuit, inactive endpoint)
//!   updates the row (`failed`, or `dead` on the last attempt) and
//!   fails the job, so the host retries with backoff and dead-letters it after
//!   `max_attempts` with the error kept. An inactive endpoint is not sent to,
//!   but it still fails: the job lands in the dead letters where an operator
//!   can replay it once the endpoint is active again. A deleted endpoint
//!   never comes back: the delivery is `dead` at once and the job fails as
//!   gone (410), which the host dead-letters without retrying.
//! - A receiver may still see a delivery twice if recording its success fails
//!   after a 2xx (the retry sends again): `webhook-id` is the id to dedupe on
//!   (`x-neo-delivery` counts per tenant, so it repeats across tenants).
//! - A circuit breaker per (tenant, endpoint) stops hammering a receiver that
//!   keeps failing (see `breaker`).
//! - A delivery left `pending` or `failed` with no job to send it is queued
//!   again by the sweep (see `sweep`): on a schedule, or `neo-ops run
//!   webhook-dispatch [--tenant NAME] [--dry-run] [--json]`.

mod breaker;
mod delivery;
mod send;
mod settings;
mod signature;
mod sweep;

use breaker::{Breaker, Gate};
use delivery::Delivery;
use neo_ops_sdk::args::Args;
use neo_ops_sdk::serde_json::{self, json};
use neo_ops_sdk::{
    Failure, Invocation, Output, Plugin, QueueMessage, ScheduleEvent, backends, kv, log, reply,
    time,
};
use settings::Settings;

struct WebhookDispatch;

const USAGE: &str = "usage: neo-ops run webhook-dispatch [--tenant NAME] [--dry-run] [--json]";

impl Plugin for WebhookDispatch {
    const DRY_RUN: bool = true;
    const USAGE: &'static str = USAGE;

    /// The sweep, now: the stuck deliveries of one tenant or all of them,
    /// listed and queued again. Queued in this command's own memory they
    /// would be lost, so without Redis only a dry run is done.
    fn command(inv: &Invocation, args: &Args) -> Result<Output, Failure> {
        args.only_flags(&["--tenant"], &["--json"], USAGE)?;
        let dry_run = args.dry_run(inv);
        if !dry_run && backends::kv_in_process() {
            return Err(reply::fail(
                409,
                "the webhook queue is kept in Redis: without REDIS_URL it lives in the serving \
                 process's memory, which this command cannot reach (set REDIS_URL, or leave it \
                 to the sweep's schedule; --dry-run lists what it would queue)",
            ));
        }
        let after = Settings::load()?
            .sweep_after
            .map_err(|e| reply::fail(400, e))?;
        let asked = sweep::Asked {
            only: args.value("--tenant"),
            dry_run,
            json: args.flag("--json"),
        };
        sweep::run(asked, after)
    }

    /// The sweep, every tenant: one sweep job each on the webhook queue.
    fn schedule(_: &Invocation, _: &ScheduleEvent) -> Result<Output, Failure> {
        Settings::load()?
            .sweep_after
            .map_err(|e| reply::fail(400, e))?;
        sweep::fan_out()
    }

    fn queue(inv: &Invocation, message: &QueueMessage) -> Result<Output, Failure> {
        let Some(tenant) = &inv.tenant else {
            return Err(reply::fail(
                400,
                format!("webhook job {} has no tenant", message.id),
            ));
        };
        let settings = Settings::load()?;
        if is_sweep(&message.payload) {
            let after = settings.sweep_after.map_err(|e| reply::fail(400, e))?;
            let last_attempt = message.attempt >= message.max_attempts;
            return sweep::job(tenant, after, last_attempt);
        }
        let delivery_id = delivery_id(&message.payload)?;
        Job {
            tenant,
            delivery_id,
            message,
            settings: &settings,
        }
        .run()
    }
}

/// A tenant's sweep job ([`sweep::SWEEP_JOB`]).
fn is_sweep(payload: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(payload)
        .is_ok_and(|v| v.get("sweep") == Some(&serde_json::Value::Bool(true)))
}

/// `{"delivery_id": N}` with a positive integer N.
fn delivery_id(payload: &str) -> Result<i64, Failure> {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|v| v.get("delivery_id").and_then(serde_json::Value::as_i64))
        .filter(|id| *id > 0)
        .ok_or_else(|| {
            let expected = r#"{"delivery_id": <id>} or {"sweep": true}"#;
            reply::bad_job_payload("webhook", payload, expected)
        })
}

struct Job<'a> {
    tenant: &'a str,
    delivery_id: i64,
    message: &'a QueueMessage,
    settings: &'a Settings,
}

impl Job<'_> {
    fn target(&self) -> String {
        format!("tenant:{}", self.tenant)
    }

    /// Runs the attempt under the delivery's lock; marked seen first, so
    /// the sweep leaves a delivery some job is trying alone.
    fn run(&self) -> Result<Output, Failure> {
        sweep::mark_seen(self.tenant, self.delivery_id, self.settings.seen_for());
        let lock = format!("webhook:delivery:{}:{}", self.tenant, self.delivery_id);
        // Outlives one live attempt (the request plus bookkeeping) but not the
        // first retry's backoff, so a worker killed mid-send does not cost the
        // next attempt.
        let ttl = u64::from(self.settings.request_timeout_ms) + 10_000;
        let token = match kv::lock(&lock, ttl) {
            Ok(token) => token,
            // Nothing sent: the row still records the attempt, so a job
            // dead-lettered this way does not leave it pending.
            Err(e) => return self.unsent(e),
        };
        let Some(token) = token else {
            return Err(reply::fail(
                409,
                format!(
                    "delivery {} is being sent by another worker",
                    self.delivery_id
                ),
            ));
        };
        let result = self.attempt();
        if let Err(e) = kv::unlock(&lock, &token) {
            self.log(
                log::Level::Warn,
                &format!("releasing \"{lock}\" failed: {}", e.message),
            );
        }
        result
    }

    fn attempt(&self) -> Result<Output, Failure> {
        let target = self.target();
        let Some(delivery) = delivery::load(&target, self.delivery_id)? else {
            // Gone (410): no retry brings the row back, so the host
            // dead-letters the job at once.
            return Err(reply::fail(
                410,
                format!(
                    "delivery {} not found in tenant \"{}\"; not retried",
                    self.delivery_id, self.tenant
                ),
            ));
        };
        if delivery.status == "delivered" {
            self.log(log::Level::Info, "already delivered; not sending again");
            return Ok(reply::ok(
                json!({"delivery_id": delivery.id, "status": "delivered", "sent": false}),
            ));
        }
        let endpoint = &delivery.endpoint;
        if endpoint.deleted {
            let reason = format!("endpoint {} is deleted; not retried", endpoint.id);
            // No retry would change it: dead now.
            return self.record_failure(&delivery, 410, reason, true);
        }
        if !endpoint.active {
            let reason = format!("endpoint {} is inactive", endpoint.id);
            return self.failed(&delivery, 409, reason);
        }
        let breaker = Breaker {
            tenant: self.tenant,
            endpoint_id: endpoint.id,
            settings: self.settings,
        };
        let now = time::now_micros();
        let gate = match breaker.gate(now) {
            Ok(gate) => gate,
            Err(e) => {
                let reason = format!(
                    "circuit state of endpoint {} unreadable: {}",
                    endpoint.id, e.message
                );
                return self.failed(&delivery, reply::status_of(e.code), reason);
            }
        };
        if matches!(gate, Gate::Open) {
            return self.failed(
                &delivery,
                503,
                format!("circuit open for endpoint {}", endpoint.id),
            );
        }
        match send::post(
            self.tenant,
            &delivery,
            now / 1_000_000,
            self.settings.request_timeout_ms,
        ) {
            Ok(status) => {
                // Delivered first: the breaker's bookkeeping (best effort,
                // kv and a row) must not stand between a 2xx and the mark
                // that keeps the delivery from being sent again.
                let marked = delivery::mark_delivered(&target, delivery.id, time::now_micros());
                if marked.is_ok() {
                    sweep::outcome_recorded(self.tenant, delivery.id);
                }
                // A half-open circuit's trial is settled either way.
                breaker.succeeded(gate, time::now_micros());
                marked?;
                Ok(reply::ok(json!({
                    "delivery_id": delivery.id,
                    "status": "delivered",
                    "sent": true,
                    "http_status": status,
                })))
            }
            // Standard Webhooks: 410 Gone asks the sender to disable the
            // endpoint and stop. The receiver answered, so the circuit is
            // not charged; this delivery is dead, and the endpoint's later
            // ones wait as an inactive endpoint's do, until it is switched
            // back on.
            Err(refused) if refused.gone => {
                breaker.succeeded(gate, time::now_micros());
                let reason = match delivery::disable_endpoint(&target, endpoint.id, &refused.reason)
                {
                    Err(e) if !neo_ops_sdk::audit::committed(&e) => {
                        self.log(
                            log::Level::Warn,
                            &format!("disabling endpoint {} failed: {}", endpoint.id, e.message),
                        );
                        format!(
                            "{}; disabling endpoint {} failed",
                            refused.reason, endpoint.id
                        )
                    }
                    // Disabled, if only its audit record is missing (the
                    // host logged that): the endpoint is off all the same.
                    _ => format!("{}; endpoint {} disabled", refused.reason, endpoint.id),
                };
                self.record_failure(&delivery, 410, reason, true)
            }
            Err(refused) => {
                breaker.failed(gate, time::now_micros());
                self.failed(&delivery, 502, refused.reason)
            }
        }
    }

    /// A job that could not take the delivery's lock (kv unavailable):
    /// recorded on its row unless the row is gone or delivered.
    fn unsent(&self, e: neo_ops_sdk::Error) -> Result<Output, Failure> {
        let reason = format!("delivery lock unavailable: {}", e.message);
        match delivery::load(&self.target(), self.delivery_id) {
            Ok(Some(delivery)) if delivery.status != "delivered" => {
                self.failed(&delivery, reply::status_of(e.code), reason)
            }
            _ => Err(reply::fail(reply::status_of(e.code), reason)),
        }
    }

    /// Records the failed attempt on the row and fails the job with `reason`,
    /// which the host keeps as the job's last error.
    fn failed(&self, delivery: &Delivery, status: u16, reason: String) -> Result<Output, Failure> {
        let last = self.message.attempt >= self.message.max_attempts;
        self.record_failure(delivery, status, reason, last)
    }

    /// [`Job::failed`], the row `dead` when `last` (no retry follows).
    fn record_failure(
        &self,
        delivery: &Delivery,
        status: u16,
        reason: String,
        last: bool,
    ) -> Result<Output, Failure> {
        match delivery::mark_failed(&self.target(), delivery.id, &reason, last) {
            Ok(_) => sweep::outcome_recorded(self.tenant, delivery.id),
            Err(e) => self.log(
                log::Level::Warn,
                &format!("recording the failure failed: {}", e.message),
            ),
        }
        Err(reply::fail(status, reason))
    }

    fn log(&self, level: log::Level, message: &str) {
        log::log(
            level,
            message,
            &[
                ("tenant".into(), self.tenant.to_string()),
                ("delivery".into(), self.delivery_id.to_string()),
                ("attempt".into(), self.message.attempt.to_string()),
            ],
        );
    }
}

neo_ops_sdk::export_plugin!(WebhookDispatch);
