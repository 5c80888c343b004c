//! Finds a component's interface exports and checks their types at link
//! time. The generated `GuestIndices::new` finds exports by name only and
//! checks types on every call, so a component built against an older
//! `run` (or `check`) would load, pass `neo-ops check`, replace a good set
//! on reload, and then fail every invocation.

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{ComponentNamedList, InstancePre, Lift, Lower};

use crate::bindings::{check_export, handler_export};
use crate::caps::state::StoreState;

const HANDLER: &str = "neo:ops/handler@0.1.0";
const CHECK: &str = "neo:ops/check@0.1.0";

/// `neo:ops/handler`, type-checked; `Ok(None)` when it is not exported.
pub fn handler(
    pre: &InstancePre<StoreState>,
) -> anyhow::Result<Option<handler_export::GuestIndices>> {
    use handler_export::{Failure, Invocation, Output};
    if !typecheck::<(&Invocation,), (Result<Output, Failure>,)>(pre, HANDLER, "run")? {
        return Ok(None);
    }
    Ok(Some(handler_export::GuestIndices::new(pre)?))
}

/// `neo:ops/check`, type-checked; `Ok(None)` when it is not exported.
pub fn check(pre: &InstancePre<StoreState>) -> anyhow::Result<Option<check_export::GuestIndices>> {
    if !typecheck::<(), (check_export::Outcome,)>(pre, CHECK, "check")? {
        return Ok(None);
    }
    Ok(Some(check_export::GuestIndices::new(pre)?))
}

/// Whether `interface` is exported (false when it is not), failing when its
/// function `func` is missing or its type is not `Params -> Results`.
fn typecheck<Params, Results>(
    pre: &InstancePre<StoreState>,
    interface: &str,
    func: &str,
) -> anyhow::Result<bool>
where
    Params: ComponentNamedList + Lower,
    Results: ComponentNamedList + Lift,
{
    let component = pre.component();
    let Some((item, index)) = component.get_export(None, interface) else {
        return Ok(false);
    };
    if !matches!(item, ComponentItem::ComponentInstance(_)) {
        anyhow::bail!("export \"{interface}\" is not an interface");
    }
    match component.get_export(Some(&index), func) {
        Some((ComponentItem::ComponentFunc(ty), _)) => ty
            .typecheck::<Params, Results>(&pre.instance_type())
            .map_err(|e| {
                anyhow::anyhow!(
                    "export \"{interface}\" has \"{func}\" of another type than this host's \
                     (built against another version of the WIT?): {e:#}"
                )
            })
            .map(|()| true),
        Some(_) => anyhow::bail!("export \"{interface}\" has \"{func}\" that is not a function"),
        None => anyhow::bail!("export \"{interface}\" has no function \"{func}\""),
    }
}
