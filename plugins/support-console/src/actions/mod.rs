//! The remediation actions, one file each. Each is prepared first
//! (everything that can be "not found" is looked up, nothing changes) and
//! applied only once the double-click guard is held. Adding one: a file with
//! `prepare` and `apply`, a variant here, a route in `plugins.toml`.

mod replay_webhook;
mod reprint_kot;
mod resend_invoice;
mod unlock_pin;

use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::Value as Json;
use neo_ops_sdk::tenants::Tenant;
use neo_ops_sdk::{Failure, reply};

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

/// What an applied action did.
pub struct Outcome {
    /// Merged into the response's `data`.
    pub data: Json,
    /// The audit record's details: counts and ids, never secrets or PII.
    pub details: Json,
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
    /// Does the work; `took_effect` is called as soon as it has taken effect
    /// where a later step could still be cut off (resend_invoice: the mail
    /// has gone), so a repeat after that point is not let through to do it
    /// again.
    pub fn apply(&self, tenant: &Tenant, took_effect: &dyn Fn()) -> Result<Outcome, Failure> {
        match self {
            Plan::ResendInvoice(p) => resend_invoice::apply(p, tenant, took_effect),
            Plan::ReprintKot(p) => reprint_kot::apply(p, tenant),
            Plan::ReplayWebhook(p) => replay_webhook::apply(p, tenant),
            Plan::UnlockPin(p) => unlock_pin::apply(p, tenant),
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
