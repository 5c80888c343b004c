//! The digest's figures, read from one tenant's database for one business day.
//! SQL is portable (Postgres and SQLite): sums are cast to BIGINT because
//! Postgres returns NUMERIC for SUM(bigint), and the average is computed here
//! from a sum and a count so both backends agree to the last digit.

use neo_ops_sdk::Error;
use neo_ops_sdk::days::Range;
use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::serde_json::{Value as Json, json};

/// Orders placed in the day that count: not cancelled, not deleted.
const COUNTED: &str = "o.placed_at >= $1 AND o.placed_at < $2 \
                       AND o.status <> 'CANCELLED' AND o.deleted_at IS NULL";

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Item {
    pub name: String,
    pub quantity: i64,
    pub revenue_minor: i64,
}

/// Sales of one business day: counted orders and their gross total.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sales {
    pub orders: i64,
    pub gross_minor: i64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Digest {
    pub orders: i64,
    /// Gross sales: the counted orders' totals (before tips).
    pub gross_sales_minor: i64,
    /// The same weekday a week earlier, for the comparison owners look for.
    pub last_week: Sales,
    pub cancelled: i64,
    pub complimentary: i64,
    pub tips_minor: i64,
    pub prep_total_seconds: i64,
    /// Orders with a recorded preparation time (the average's divisor).
    pub prep_orders: i64,
    pub top_items: Vec<Item>,
    pub breaker_opens: i64,
}

impl Digest {
    /// Mean preparation time in seconds; `None` when no order recorded one.
    pub fn avg_prep_seconds(&self) -> Option<f64> {
        (self.prep_orders > 0).then(|| self.prep_total_seconds as f64 / self.prep_orders as f64)
    }

    pub fn to_json(&self) -> Json {
        let items: Vec<Json> = self
            .top_items
            .iter()
            .map(|i| json!({"name": i.name, "quantity": i.quantity, "revenue_minor": i.revenue_minor}))
            .collect();
        json!({
            "orders": self.orders,
            "gross_sales_minor": self.gross_sales_minor,
            "last_week": {
                "orders": self.last_week.orders,
                "gross_sales_minor": self.last_week.gross_minor,
            },
            "cancelled_excluded": self.cancelled,
            "complimentary_orders": self.complimentary,
            "tips_minor": self.tips_minor,
            "avg_prep_seconds": self.avg_prep_seconds(),
            "prep_orders": self.prep_orders,
            "top_items": items,
            "breaker_opens": self.breaker_opens,
        })
    }
}

/// Reads every figure for `range` from `target` (`tenant:<name>`), and the
/// sales of `last_week` (the same weekday a week earlier).
pub fn collect(target: &str, range: Range, last_week: Range, top_n: i64) -> Result<Digest, Error> {
    let span = [Value::Timestamp(range.start), Value::Timestamp(range.end)];
    let mut digest = order_totals(target, &span)?;
    let before = [
        Value::Timestamp(last_week.start),
        Value::Timestamp(last_week.end),
    ];
    let earlier = order_totals(target, &before)?;
    digest.last_week = Sales {
        orders: earlier.orders,
        gross_minor: earlier.gross_sales_minor,
    };
    digest.cancelled = count(
        target,
        "SELECT COUNT(*) AS n FROM orders o WHERE o.placed_at >= $1 AND o.placed_at < $2 \
         AND o.status = 'CANCELLED' AND o.deleted_at IS NULL",
        &span,
    )?;
    digest.top_items = top_items(target, &span, top_n)?;
    digest.breaker_opens = count(
        target,
        "SELECT COUNT(*) AS n FROM webhook_breaker_events \
         WHERE event = 'open' AND at >= $1 AND at < $2",
        &span,
    )?;
    Ok(digest)
}

fn order_totals(target: &str, span: &[Value]) -> Result<Digest, Error> {
    let sql = format!(
        "SELECT COUNT(*) AS orders, \
         CAST(COALESCE(SUM(CASE WHEN o.complimentary THEN 1 ELSE 0 END), 0) AS BIGINT) AS comp, \
         CAST(COALESCE(SUM(o.tip_minor), 0) AS BIGINT) AS tips, \
         CAST(COALESCE(SUM(o.total_minor), 0) AS BIGINT) AS gross, \
         CAST(COALESCE(SUM(o.prep_seconds), 0) AS BIGINT) AS prep_total, \
         COUNT(o.prep_seconds) AS prep_orders \
         FROM orders o WHERE {COUNTED}"
    );
    let rows = db::query(target, &sql, span)?;
    let row = rows.iter().next();
    let int = |c: &str| row.as_ref().and_then(|r| r.int(c)).unwrap_or(0);
    Ok(Digest {
        orders: int("orders"),
        complimentary: int("comp"),
        tips_minor: int("tips"),
        gross_sales_minor: int("gross"),
        prep_total_seconds: int("prep_total"),
        prep_orders: int("prep_orders"),
        ..Digest::default()
    })
}

/// Best sellers by quantity; ties go to revenue, then name, so the list is stable.
fn top_items(target: &str, span: &[Value], top_n: i64) -> Result<Vec<Item>, Error> {
    let sql = format!(
        "SELECT oi.name AS item_name, \
         CAST(SUM(oi.quantity) AS BIGINT) AS qty, \
         CAST(SUM(oi.quantity * oi.unit_price_minor) AS BIGINT) AS revenue \
         FROM order_items oi JOIN orders o ON o.id = oi.order_id \
         WHERE {COUNTED} \
         GROUP BY oi.name ORDER BY qty DESC, revenue DESC, item_name LIMIT $3"
    );
    let mut params = span.to_vec();
    params.push(Value::Int(top_n));
    let rows = db::query(target, &sql, &params)?;
    Ok(rows
        .iter()
        .map(|r| Item {
            name: r.text("item_name").unwrap_or_default().to_string(),
            quantity: r.int("qty").unwrap_or(0),
            revenue_minor: r.int("revenue").unwrap_or(0),
        })
        .collect())
}

fn count(target: &str, sql: &str, params: &[Value]) -> Result<i64, Error> {
    let rows = db::query(target, sql, params)?;
    Ok(rows.iter().next().and_then(|r| r.int("n")).unwrap_or(0))
}
