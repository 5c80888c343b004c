//! The remediation actions, one file each. Each is prepared first
//! (everything that can be "not found" is looked up, nothing changes) and
//! applied only once the double-click guard is held. Applying writes the
//! action's one audit record; a change to the tenant's database goes in with
//! it as one host call ([`Record::change`]), so a change that commits is
//! never left without its record, even by a call cut off right after.
//! Adding one: a file with `prepare` and `apply`, a variant here, a route in
//! `plugins.toml`.

mod replay_webhook;
mod reprint_kot;
mod resend_invoice;
mod unlock_pin;

use neo_ops_sdk::db::{self, Statement, Value};
use neo_ops_sdk::serde_json::Value as Json;
use neo_ops_sdk::tenants::Tenant;
use neo_ops_sdk::{Failure, audit, reply};

#[derive(Clone, Copy)]
pub enum Action {
    ResendInvoice,
    ReprintKot,
    ReplayWebhook,
    UnlockPin,
}

/// What an action acts on.
#[derive(Clone, Copy)]
pub enum Kind {
    Order,
    Staff,
}

impl Kind {
    /// The route's path parameter.
    pub fn param(self) -> &'static str {
        match self {
            Kind::Order => "order_id",
            Kind::Staff => "staff_id",
        }
    }

    /// The key naming it in a response.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Order => "order",
            Kind::Staff => "staff",
        }
    }

    /// The audit target, e.g. `order:42`.
    pub fn target(self, id: i64) -> String {
        format!("{}:{id}", self.noun())
    }
}

/// An action ready to apply, with what it found.
pub enum Plan {
    ResendInvoice(resend_invoice::Invoice),
    ReprintKot(reprint_kot::Reprint),
    ReplayWebhook(replay_webhook::Replay),
    UnlockPin(unlock_pin::Unlock),
}

/// What an applied action did: merged into the response's `data`.
pub struct Outcome {
    pub data: Json,
}

/// How [`Record::change`] failed.
pub enum ChangeError {
    /// The change committed; only its record is missing (marked done).
    Committed(Failure),
    /// Nothing changed.
    NotDone(Failure),
}

impl From<ChangeError> for Failure {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Committed(f) | ChangeError::NotDone(f) => f,
        }
    }
}

/// The audit record an applied action writes (the host stamps who and the
/// request id). Its details are counts and ids, never secrets or PII.
pub struct Record<'a> {
    pub tenant: &'a Tenant,
    /// e.g. `console.reprint_kot`.
    pub action: String,
    pub target: &'a str,
    /// Called as soon as the action has taken effect, where a later step
    /// could still fail or be cut off, so a repeat is not let through to do
    /// it again.
    pub took_effect: &'a dyn Fn(),
}

impl Record<'_> {
    fn entry(&self, details: Json) -> audit::Entry {
        audit::entry(&self.action, self.target, Some(&self.tenant.name), details)
    }

    /// Runs `sql` in the tenant's database and appends the record (with
    /// `"rows"`, the rows it changed, added to `details`) in one host call;
    /// returns the rows changed. A change that committed without its record
    /// is said to have taken effect ([`ChangeError::Committed`]).
    pub fn change(&self, sql: &str, params: Vec<Value>, details: Json) -> Result<u64, ChangeError> {
        let statement = Statement {
            sql: sql.to_string(),
            params,
        };
        match audit::record_transaction(&self.tenant.target(), &[statement], &self.entry(details)) {
            Ok((_, rows)) => Ok(rows.first().copied().unwrap_or(0)),
            Err(e) if audit::committed(&e) => {
                (self.took_effect)();
                Err(ChangeError::Committed(reply::fail(
                    503,
                    format!(
                        "{} on {} was done, but its audit record could not be written \
                         (the host logged it); it is not repeated",
                        self.action, self.target
                    ),
                )))
            }
            Err(e) => Err(ChangeError::NotDone(e.into())),
        }
    }

    /// Appends the record for work outside the tenant's database.
    pub fn append(&self, details: Json) -> Result<(), Failure> {
        audit::append(&self.entry(details))?;
        Ok(())
    }
}

impl Action {
    const ALL: [Action; 4] = [
        Action::ResendInvoice,
        Action::ReprintKot,
        Action::ReplayWebhook,
        Action::UnlockPin,
    ];

    /// Its name (the route's last segment, the audit action) and what it acts on.
    fn spec(self) -> (&'static str, Kind) {
        match self {
            Action::ResendInvoice => ("resend_invoice", Kind::Order),
            Action::ReprintKot => ("reprint_kot", Kind::Order),
            Action::ReplayWebhook => ("replay_webhook", Kind::Order),
            Action::UnlockPin => ("unlock_pin", Kind::Staff),
        }
    }

    pub fn name(self) -> &'static str {
        self.spec().0
    }

    pub fn kind(self) -> Kind {
        self.spec().1
    }

    /// The action a manifest route names (its last segment); `None` for search.
    pub fn of_route(route: &str) -> Option<Action> {
        let last = route.rsplit('/').next()?;
        Self::ALL.into_iter().find(|a| a.name() == last)
    }

    /// Looks up everything the action needs in the tenant's own database.
    pub fn prepare(self, tenant: &Tenant, id: i64) -> Result<Plan, Failure> {
        let db = tenant.target();
        Ok(match self {
            Action::ResendInvoice => Plan::ResendInvoice(resend_invoice::prepare(&db, id)?),
            Action::ReprintKot => Plan::ReprintKot(reprint_kot::prepare(&db, id)?),
            Action::ReplayWebhook => Plan::ReplayWebhook(replay_webhook::prepare(&db, id)?),
            Action::UnlockPin => Plan::UnlockPin(unlock_pin::prepare(&db, id)?),
        })
    }
}

impl Plan {
    /// Does the work and writes `record` (whose `took_effect` it calls where
    /// a later step could still fail: resend_invoice once the mail has gone).
    pub fn apply(&self, record: &Record) -> Result<Outcome, Failure> {
        match self {
            Plan::ResendInvoice(p) => resend_invoice::apply(p, record),
            Plan::ReprintKot(p) => reprint_kot::apply(p, record),
            Plan::ReplayWebhook(p) => replay_webhook::apply(p, record),
            Plan::UnlockPin(p) => unlock_pin::apply(p, record),
        }
    }
}

fn order_exists(db: &str, id: i64) -> Result<(), Failure> {
    let rows = db::query(
        db,
        "SELECT id FROM orders WHERE id = $1 AND deleted_at IS NULL",
        &[Value::Int(id)],
    )?;
    if rows.rows.is_empty() {
        return Err(reply::fail(404, format!("order {id} not found")));
    }
    Ok(())
}
