//! L1 support console (spec "L1 Support Console"): super_admin routes for
//! operations staff to look up a tenant's table or order and to run safe
//! remediation actions on it.
//!
//! - `GET  /admin/support/console/search?tenant=&table=&order=`
//! - `POST /admin/support/console/order/{order_id}/resend_invoice | reprint_kot | replay_webhook`
//! - `POST /admin/support/console/staff/{staff_id}/unlock_pin`
//!
//! The role check is the host's (manifest `role = "super_admin"`), and so is
//! settling `tenant` (name or numeric id, in the query or a JSON body);
//! every lookup goes to that tenant's database only. Actions are guarded
//! against double clicks (an `Idempotency-Key`, else a short window per
//! action and target), and every action that took effect writes one audit
//! record with its change (a replay whose queueing failed part way too);
//! duplicates and failures before any change write none.

mod actions;
mod guard;
mod search;

use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::tenants::{self, Tenant};
use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, audit, reply};

use actions::Action;
use guard::Guard;

/// Longest `Idempotency-Key` accepted (it becomes part of a kv key).
const MAX_KEY_LEN: usize = 128;

struct Console;

impl Plugin for Console {
    fn http(inv: &Invocation, req: &HttpRequest) -> Result<Output, Failure> {
        let tenant = inv
            .tenant
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| reply::fail(400, "tenant is required"))?;
        match Action::of_route(&req.route) {
            None => search(req, tenant),
            Some(action) => act(req, tenant, action),
        }
    }
}

fn search(req: &HttpRequest, tenant: &str) -> Result<Output, Failure> {
    let query = search::Query::parse(req)?;
    let tenant = tenants::require(tenant)?;
    let found = search::run(&tenant, &query)?;
    record(&tenant, "console.search", &tenant.target(), found.details)?;
    Ok(reply::ok(found.data))
}

fn act(req: &HttpRequest, tenant: &str, action: Action) -> Result<Output, Failure> {
    let kind = action.kind();
    let id = req.id_param(kind.param())?;
    if id <= 0 {
        return Err(reply::fail(
            400,
            format!("{} \"{id}\" is not a positive integer", kind.param()),
        ));
    }
    let key = idempotency_key(req)?;
    let tenant = tenants::require(tenant)?;
    let target = kind.target(id);
    let mut data = json!({
        "tenant": tenant.json(),
        "action": action.name(),
        kind.noun(): {"id": id},
    });
    let duplicate = |mut data: Json| {
        data["duplicate"] = json!(true);
        Ok(reply::ok(data))
    };
    if guard::already_done(&tenant.name, action.name(), &target, key)? {
        return duplicate(data);
    }
    let plan = action.prepare(&tenant, id)?;
    let held = match guard::acquire(&tenant.name, action.name(), &target, key)? {
        Guard::Held(held) => held,
        Guard::Done => return duplicate(data),
        Guard::Running => {
            return Err(reply::fail(
                409,
                format!(
                    "{} on {target} is already running; check its outcome before trying again",
                    action.name()
                ),
            ));
        }
    };
    let record = actions::Record {
        tenant: &tenant,
        action: format!("console.{}", action.name()),
        target: &target,
        took_effect: &|| held.done(),
    };
    let outcome = match plan.apply(&record) {
        Ok(o) => o,
        Err(f) => {
            // The lock goes; a repeat is let through only if the action
            // had not taken effect (one that had is marked done, and the
            // mark outlives the lock: its record could not be written, or
            // replay_webhook's queueing failed part way).
            held.release();
            return Err(f);
        }
    };
    // The work is done and recorded; the guard stays so a repeat does nothing.
    held.done();
    held.finish();
    if let (Some(obj), Json::Object(more)) = (data.as_object_mut(), outcome.data) {
        obj.extend(more);
    }
    data["duplicate"] = json!(false);
    Ok(reply::ok(data))
}

/// The `Idempotency-Key` header, if sent: 1 to 128 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<&str>, Failure> {
    let Some(key) = req.header("idempotency-key") else {
        return Ok(None);
    };
    if (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(Some(key))
    } else {
        Err(reply::fail(
            400,
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"),
        ))
    }
}

/// One audit record for a successful call (the host stamps who and the request id).
fn record(tenant: &Tenant, action: &str, target: &str, details: Json) -> Result<(), Failure> {
    audit::record(action, target, Some(&tenant.name), details)?;
    Ok(())
}

neo_ops_sdk::export_plugin!(Console);
