//! L1 support console (spec "L1 Support Console"): super_admin routes for
//! operations staff to look up a tenant's table or order and to run safe
//! remediation actions on it.
//!
//! - `GET  /admin/support/console/search?tenant=&table=&order=`
//! - `POST /admin/support/console/order/{order_id}/resend_invoice | reprint_kot | replay_webhook`
//! - `POST /admin/support/console/staff/{staff_id}/unlock_pin`
//!
//! The role check is the host's (manifest `role = "super_admin"`). `tenant`
//! is the tenant's name or numeric id, from the query or a JSON body, and
//! every lookup goes to that tenant's database only. Actions are guarded
//! against double clicks (an `Idempotency-Key`, else a short window per
//! action and target), and every successful call writes one audit record;
//! failures and duplicates write none.

mod actions;
mod guard;
mod request;
mod search;
mod tenant;

use neo_ops_sdk::serde_json::{Value as Json, json};
use neo_ops_sdk::{Failure, HttpRequest, Invocation, Output, Plugin, Trigger, audit, reply};

use actions::Action;
use tenant::Tenant;

struct Console;

impl Plugin for Console {
    fn run(inv: Invocation) -> Result<Output, Failure> {
        let Trigger::Http(http) = &inv.trigger else {
            return Err(reply::fail(
                400,
                "support-console answers HTTP requests only",
            ));
        };
        match route(http)? {
            Route::Search => search(&inv, http),
            Route::Act(action, id) => act(&inv, http, action, id),
        }
    }
}

enum Route {
    Search,
    Act(Action, i64),
}

/// Which of the manifest's routes this request came in on.
fn route(http: &HttpRequest) -> Result<Route, Failure> {
    let last = http.path.rsplit('/').next().unwrap_or_default();
    let action = match (http.method.as_str(), last) {
        ("GET", "search") => return Ok(Route::Search),
        ("POST", "resend_invoice") => Action::ResendInvoice,
        ("POST", "reprint_kot") => Action::ReprintKot,
        ("POST", "replay_webhook") => Action::ReplayWebhook,
        ("POST", "unlock_pin") => Action::UnlockPin,
        (method, _) => {
            return Err(reply::fail(
                404,
                format!("no console route for {method} \"{}\"", http.path),
            ));
        }
    };
    let id = request::path_id(http, action.kind().param())?;
    Ok(Route::Act(action, id))
}

fn search(inv: &Invocation, http: &HttpRequest) -> Result<Output, Failure> {
    let param = request::tenant_param(inv, http, false)?;
    let query = search::Query::parse(http)?;
    let tenant = tenant::resolve(&param)?;
    let found = search::run(&tenant, &query)?;
    record(
        inv,
        &tenant,
        "console.search",
        &format!("tenant:{}", tenant.name),
        found.details,
    )?;
    Ok(reply::ok(found.data))
}

fn act(inv: &Invocation, http: &HttpRequest, action: Action, id: i64) -> Result<Output, Failure> {
    let param = request::tenant_param(inv, http, true)?;
    let key = request::idempotency_key(http)?;
    let tenant = tenant::resolve(&param)?;
    let plan = actions::prepare(action, &tenant, id)?;
    let target = action.kind().target(id);
    let mut data = json!({
        "tenant": tenant.json(),
        "action": action.name(),
        action.kind().noun(): {"id": id},
    });
    let Some(held) = guard::acquire(&tenant.name, action.name(), &target, key)? else {
        data["duplicate"] = json!(true);
        return Ok(reply::ok(data));
    };
    let outcome = match plan.apply(&tenant) {
        Ok(o) => o,
        Err(f) => {
            // Failed (perhaps part way): let a retry through, every action is safe to redo.
            held.release();
            return Err(f);
        }
    };
    // From here on the work is done; the guard stays so a repeat does nothing.
    record(
        inv,
        &tenant,
        &format!("console.{}", action.name()),
        &target,
        outcome.details,
    )?;
    merge(&mut data, outcome.data);
    data["duplicate"] = json!(false);
    Ok(reply::ok(data))
}

fn merge(into: &mut Json, more: Json) {
    if let (Some(obj), Json::Object(more)) = (into.as_object_mut(), more) {
        obj.extend(more);
    }
}

/// One audit record for a successful call. The host records the token's
/// name as the actor, and the request id.
fn record(
    inv: &Invocation,
    tenant: &Tenant,
    action: &str,
    target: &str,
    details: Json,
) -> Result<(), Failure> {
    let actor = inv
        .principal
        .as_ref()
        .map_or("support-console", |p| p.name.as_str());
    audit::append(&audit::Entry {
        actor: actor.to_string(),
        action: action.to_string(),
        target: target.to_string(),
        tenant: Some(tenant.name.clone()),
        details: details.to_string(),
    })?;
    Ok(())
}

neo_ops_sdk::export_plugin!(Console);
