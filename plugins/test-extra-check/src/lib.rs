//! A preflight check that is not part of neo-ops' own manifest: the e2e test
//! adds it to show an operator can add a check by building a component and
//! listing it with `check = true`, without touching the host.
//!
//! `menu-prices`: no live menu item in any live tenant has a price of zero or
//! less (a POS would ring it up free). Fails naming tenant and SKUs.
//!
//! Grants: `db = ["master", "tenant:*"]`.

use check_common::{describe, fail, pass, tenants};
use neo_ops_sdk::{Check, CheckOutcome, db};

const FREE_ITEMS: &str = "SELECT sku FROM menu_items \
    WHERE deleted_at IS NULL AND price_minor <= 0 ORDER BY sku";

struct MenuPrices;

impl Check for MenuPrices {
    fn check() -> CheckOutcome {
        let names = match tenants::live_or_fail("check the master database") {
            Ok(n) => n,
            Err(outcome) => return outcome,
        };
        let mut problems = Vec::new();
        for t in &names {
            match db::query(&tenants::target(t), FREE_ITEMS, &[]) {
                Err(e) => problems.push(format!("tenant \"{t}\": {}", describe(&e))),
                Ok(rows) if rows.rows.is_empty() => {}
                Ok(rows) => {
                    let skus: Vec<&str> = rows.iter().filter_map(|r| r.text("sku")).collect();
                    problems.push(format!(
                        "tenant \"{t}\": price <= 0 for {}",
                        skus.join(", ")
                    ));
                }
            }
        }
        if problems.is_empty() {
            pass(format!(
                "every live menu item in {} tenant(s) has a positive price",
                names.len()
            ))
        } else {
            fail(
                problems.join("; "),
                "set a price (UPDATE menu_items SET price_minor = … WHERE sku = …) or soft-delete the item",
            )
        }
    }
}

neo_ops_sdk::export_check!(MenuPrices);
