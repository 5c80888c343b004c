//! The batch loops: find the next page of work by keyset on `id`, then apply
//! it in one transaction whose statements re-check every condition, so the
//! counts are the rows really changed even if the data moved in between.

use neo_ops_sdk::db::{self, RowSet, Statement, Value};

use crate::options::Options;

/// Rows changed (or, in a dry run, that would be).
#[derive(Debug, Default)]
pub struct Counts {
    pub anonymised: u64,
    pub customers_deleted: u64,
    pub outbox_deleted: u64,
    pub batches: u64,
}

/// Expired and not yet anonymised; `$N` placeholders are filled per query.
const EXPIRED: &str = "anonymized_at IS NULL AND COALESCE(last_order_at, created_at) < $2";
const HAS_ORDERS: &str = "EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id)";

pub fn purge(
    target: &str,
    cutoff: i64,
    now: i64,
    opts: &Options,
) -> Result<Counts, neo_ops_sdk::Error> {
    let mut counts = Counts::default();
    customers(target, cutoff, now, opts, &mut counts)?;
    outbox(target, opts, &mut counts)?;
    Ok(counts)
}

/// Walks expired customers in id order, a batch at a time.
fn customers(
    target: &str,
    cutoff: i64,
    now: i64,
    opts: &Options,
    counts: &mut Counts,
) -> Result<(), neo_ops_sdk::Error> {
    let page_sql = format!(
        "SELECT id, CASE WHEN {HAS_ORDERS} THEN 1 ELSE 0 END AS has_orders \
         FROM customers WHERE id > $1 AND {EXPIRED} ORDER BY id LIMIT $3"
    );
    let mut after = 0;
    loop {
        let params = [
            Value::Int(after),
            Value::Timestamp(cutoff),
            Value::Int(opts.batch_size),
        ];
        let page = db::query(target, &page_sql, &params)?;
        let Some(last) = last_id(&page) else {
            return Ok(());
        };
        if opts.dry_run {
            let with_orders = page
                .iter()
                .filter(|r| r.int("has_orders") == Some(1))
                .count();
            counts.anonymised += with_orders as u64;
            counts.customers_deleted += (page.rows.len() - with_orders) as u64;
        } else {
            let (anonymised, deleted) = apply_customers(target, after, last, cutoff, now)?;
            counts.anonymised += anonymised;
            counts.customers_deleted += deleted;
        }
        counts.batches += 1;
        if (page.rows.len() as i64) < opts.batch_size {
            return Ok(());
        }
        after = last;
    }
}

/// One transaction over ids in `(after, last]`: anonymise the expired who
/// have orders, delete the expired who have none.
fn apply_customers(
    target: &str,
    after: i64,
    last: i64,
    cutoff: i64,
    now: i64,
) -> Result<(u64, u64), neo_ops_sdk::Error> {
    let range = [
        Value::Int(after),
        Value::Timestamp(cutoff),
        Value::Int(last),
    ];
    let anonymise = Statement {
        sql: format!(
            "UPDATE customers SET name = 'redacted', phone = NULL, email = NULL, \
             address = NULL, anonymized_at = $4 \
             WHERE id > $1 AND id <= $3 AND {EXPIRED} AND {HAS_ORDERS}"
        ),
        params: [&range[..], &[Value::Timestamp(now)]].concat(),
    };
    let delete = Statement {
        sql: format!(
            "DELETE FROM customers WHERE id > $1 AND id <= $3 AND {EXPIRED} AND NOT {HAS_ORDERS}"
        ),
        params: range.to_vec(),
    };
    let done = db::transaction(target, &[anonymise, delete])?;
    Ok((done[0].0, done[1].0))
}

/// Deletes delivered outbox entries in id order, a batch at a time.
fn outbox(target: &str, opts: &Options, counts: &mut Counts) -> Result<(), neo_ops_sdk::Error> {
    const PAGE: &str = "SELECT id FROM notification_outbox \
                        WHERE status = 'delivered' AND id > $1 ORDER BY id LIMIT $2";
    const DELETE: &str = "DELETE FROM notification_outbox \
                          WHERE status = 'delivered' AND id > $1 AND id <= $2";
    let mut after = 0;
    loop {
        let page = db::query(
            target,
            PAGE,
            &[Value::Int(after), Value::Int(opts.batch_size)],
        )?;
        let Some(last) = last_id(&page) else {
            return Ok(());
        };
        counts.outbox_deleted += if opts.dry_run {
            page.rows.len() as u64
        } else {
            let delete = Statement {
                sql: DELETE.into(),
                params: vec![Value::Int(after), Value::Int(last)],
            };
            db::transaction(target, &[delete])?[0].0
        };
        counts.batches += 1;
        if (page.rows.len() as i64) < opts.batch_size {
            return Ok(());
        }
        after = last;
    }
}

fn last_id(page: &RowSet) -> Option<i64> {
    page.iter().last().and_then(|r| r.int("id"))
}
