//! The tenant's orders in a range of its business days, as CSV. Rows are read
//! in keyset batches so no single host call returns the whole range.

use crate::csv::Csv;
use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;
use neo_ops_sdk::days::start_of;
use neo_ops_sdk::db::{self, Value};
use neo_ops_sdk::rows::Row;
use neo_ops_sdk::{Error, time};

const BATCH: i64 = 2_000;

/// Largest CSV an export mails: well inside the host's 20 MiB per message
/// once base64-encoded, and inside the plugin's memory with the copy the
/// mail call makes.
pub const MAX_CSV_BYTES: usize = 8 << 20;

const HEADER: [&str; 10] = [
    "order_id",
    "placed_at",
    "status",
    "table_id",
    "customer_id",
    "items",
    "total_minor",
    "tip_minor",
    "complimentary",
    "prep_seconds",
];

const PAGE: &str = "SELECT o.id, o.placed_at, o.status, o.table_id, o.customer_id, \
    (SELECT CAST(COALESCE(SUM(i.quantity), 0) AS BIGINT) FROM order_items i \
     WHERE i.order_id = o.id) AS items, \
    o.total_minor, o.tip_minor, o.complimentary, o.prep_seconds \
    FROM orders o \
    WHERE o.placed_at >= $1 AND o.placed_at < $2 AND o.deleted_at IS NULL AND o.id > $3 \
    ORDER BY o.id LIMIT $4";

/// The CSV and how many orders it holds.
pub struct Export {
    pub csv: Vec<u8>,
    pub orders: usize,
}

/// Why an export has no CSV.
pub enum ExportError {
    Host(Error),
    /// Past [`MAX_CSV_BYTES`] after this many orders.
    TooLarge {
        orders: usize,
    },
}

impl From<Error> for ExportError {
    fn from(e: Error) -> Self {
        ExportError::Host(e)
    }
}

/// Orders placed from the start of `from` to the end of `to` in `tz`.
pub fn export(target: &str, tz: Tz, from: NaiveDate, to: NaiveDate) -> Result<Export, ExportError> {
    let (start, end) = (start_of(tz, from), start_of(tz, to + Duration::days(1)));
    let mut csv = Csv::new(&HEADER);
    let (mut after, mut orders) = (0i64, 0usize);
    loop {
        let params = [
            Value::Timestamp(start),
            Value::Timestamp(end),
            Value::Int(after),
            Value::Int(BATCH),
        ];
        let page = db::query(target, PAGE, &params)?;
        for row in page.iter() {
            after = row.int("id").unwrap_or(after);
            csv.row(fields(&row).iter().map(String::as_str));
            orders += 1;
            if csv.bytes_written() > MAX_CSV_BYTES {
                return Err(ExportError::TooLarge { orders });
            }
        }
        if (page.rows.len() as i64) < BATCH {
            break;
        }
    }
    Ok(Export {
        csv: csv.into_bytes(),
        orders,
    })
}

fn fields(row: &Row) -> Vec<String> {
    let int = |c: &str| row.int(c).map(|n| n.to_string()).unwrap_or_default();
    vec![
        int("id"),
        row.get("placed_at")
            .as_timestamp()
            .map(time::rfc3339)
            .unwrap_or_default(),
        row.text("status").unwrap_or_default().to_string(),
        int("table_id"),
        int("customer_id"),
        int("items"),
        int("total_minor"),
        int("tip_minor"),
        row.get("complimentary")
            .as_bool()
            .map(|b| b.to_string())
            .unwrap_or_default(),
        int("prep_seconds"),
    ]
}
