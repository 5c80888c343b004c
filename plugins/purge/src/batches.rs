//! The batch loops: find the next page of work by keyset on `id`, then apply
//! it in one transaction whose statements re-check every condition, so the
//! counts are the rows really changed even if the data moved in between.
//! Each batch's transaction and its `purge.batch` audit record go to the
//! host as one call (`audit::record_transaction`): personal data deleted by
//! a run that is killed mid-way is on record all the same.

use neo_ops_sdk::audit;
use neo_ops_sdk::db::{self, RowSet, Statement, Value};
use neo_ops_sdk::serde_json::json;

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
/// An order placed since the cutoff keeps a customer whatever
/// `last_order_at` says: that column is the POS's, and a stale one must not
/// cost a regular their details.
const EXPIRED: &str = "anonymized_at IS NULL AND COALESCE(last_order_at, created_at) < $2 \
    AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id AND o.placed_at >= $2)";
const HAS_ORDERS: &str = "EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id)";

/// Called after every batch (committed, or counted in a dry run) with the
/// counts so far: the caller renews its lock and reports progress; an
/// error stops the run there.
pub type AfterBatch<'a> = dyn FnMut(&Counts) -> Result<(), neo_ops_sdk::Error> + 'a;

/// One tenant's run: where it works and how each batch is recorded.
pub struct Run<'a> {
    pub tenant: &'a str,
    pub cutoff: i64,
    pub now: i64,
    pub opts: &'a Options,
}

impl Run<'_> {
    fn target(&self) -> String {
        format!("tenant:{}", self.tenant)
    }

    /// Commits `statements` with the batch's audit record (`"rows"` per
    /// statement is added by the host); returns the rows each changed.
    fn commit(
        &self,
        counts: &Counts,
        what: &[&str],
        statements: &[Statement],
    ) -> Result<Vec<u64>, neo_ops_sdk::Error> {
        let entry = audit::Entry {
            actor: String::new(),
            action: "purge.batch".into(),
            target: self.target(),
            tenant: Some(self.tenant.to_string()),
            details: json!({"batch": counts.batches + 1, "statements": what}).to_string(),
        };
        let (_, rows) = audit::record_transaction(&self.target(), statements, &entry)?;
        Ok(rows)
    }
}

pub fn purge(
    run: &Run<'_>,
    after_batch: &mut AfterBatch<'_>,
) -> Result<Counts, (Counts, neo_ops_sdk::Error)> {
    let mut counts = Counts::default();
    let done = customers(run, &mut counts, after_batch)
        .and_then(|()| outbox(run, &mut counts, after_batch));
    match done {
        Ok(()) => Ok(counts),
        Err(e) => Err((counts, e)),
    }
}

/// Walks expired customers in id order, a batch at a time.
fn customers(
    run: &Run<'_>,
    counts: &mut Counts,
    after_batch: &mut AfterBatch<'_>,
) -> Result<(), neo_ops_sdk::Error> {
    let (target, opts) = (&run.target(), run.opts);
    // Only the page's bounds cross into the plugin (one row, not a row per
    // customer): the batch's statements work on the id range. A dry run also
    // counts who has orders.
    let page_sql = if opts.dry_run {
        format!(
            "SELECT COUNT(*) AS n, MAX(id) AS last, \
             CAST(COALESCE(SUM(has_orders), 0) AS BIGINT) AS with_orders FROM \
             (SELECT id, CASE WHEN {HAS_ORDERS} THEN 1 ELSE 0 END AS has_orders \
             FROM customers WHERE id > $1 AND {EXPIRED} ORDER BY id LIMIT $3) page"
        )
    } else {
        format!(
            "SELECT COUNT(*) AS n, MAX(id) AS last FROM \
             (SELECT id FROM customers WHERE id > $1 AND {EXPIRED} ORDER BY id LIMIT $3) page"
        )
    };
    let mut after = 0;
    loop {
        let params = [
            Value::Int(after),
            Value::Timestamp(run.cutoff),
            Value::Int(opts.batch_size),
        ];
        let page = db::query(target, &page_sql, &params)?;
        let Some((n, last)) = bounds(&page) else {
            return Ok(());
        };
        let (anonymised, customers_deleted) = if opts.dry_run {
            let with_orders = page.iter().next().and_then(|r| r.int("with_orders"));
            let with_orders = with_orders.unwrap_or(0) as u64;
            (with_orders, n - with_orders)
        } else {
            apply_customers(run, counts, after, last)?
        };
        counts.anonymised += anonymised;
        counts.customers_deleted += customers_deleted;
        counts.batches += 1;
        after_batch(counts)?;
        if (n as i64) < opts.batch_size {
            return Ok(());
        }
        after = last;
    }
}

/// One transaction over ids in `(after, last]`: anonymise the expired who
/// have orders, delete the expired who have none.
fn apply_customers(
    run: &Run<'_>,
    counts: &Counts,
    after: i64,
    last: i64,
) -> Result<(u64, u64), neo_ops_sdk::Error> {
    let range = [
        Value::Int(after),
        Value::Timestamp(run.cutoff),
        Value::Int(last),
    ];
    let anonymise = Statement {
        sql: format!(
            "UPDATE customers SET name = 'redacted', phone = NULL, email = NULL, \
             address = NULL, anonymized_at = $4 \
             WHERE id > $1 AND id <= $3 AND {EXPIRED} AND {HAS_ORDERS}"
        ),
        params: [&range[..], &[Value::Timestamp(run.now)]].concat(),
    };
    let delete = Statement {
        sql: format!(
            "DELETE FROM customers WHERE id > $1 AND id <= $3 AND {EXPIRED} AND NOT {HAS_ORDERS}"
        ),
        params: range.to_vec(),
    };
    let rows = run.commit(
        counts,
        &["customers_anonymised", "customers_deleted"],
        &[anonymise, delete],
    )?;
    Ok((rows[0], rows[1]))
}

/// Deletes delivered outbox entries, and entries never delivered that are
/// older than the retention (a failed SMS is not sent again after months,
/// and its recipient is a customer's number), in id order, a batch at a
/// time.
fn outbox(
    run: &Run<'_>,
    counts: &mut Counts,
    after_batch: &mut AfterBatch<'_>,
) -> Result<(), neo_ops_sdk::Error> {
    let (target, opts) = (&run.target(), run.opts);
    const PAGE: &str = "SELECT COUNT(*) AS n, MAX(id) AS last FROM \
                        (SELECT id FROM notification_outbox \
                        WHERE (status = 'delivered' OR created_at < $3) AND id > $1 \
                        ORDER BY id LIMIT $2) page";
    const DELETE: &str = "DELETE FROM notification_outbox \
                          WHERE (status = 'delivered' OR created_at < $3) \
                          AND id > $1 AND id <= $2";
    let cutoff = Value::Timestamp(run.cutoff);
    let mut after = 0;
    loop {
        let page = db::query(
            target,
            PAGE,
            &[
                Value::Int(after),
                Value::Int(opts.batch_size),
                cutoff.clone(),
            ],
        )?;
        let Some((n, last)) = bounds(&page) else {
            return Ok(());
        };
        let outbox_deleted = if opts.dry_run {
            n
        } else {
            let delete = Statement {
                sql: DELETE.into(),
                params: vec![Value::Int(after), Value::Int(last), cutoff.clone()],
            };
            run.commit(counts, &["outbox_deleted"], &[delete])?[0]
        };
        counts.outbox_deleted += outbox_deleted;
        counts.batches += 1;
        after_batch(counts)?;
        if (n as i64) < opts.batch_size {
            return Ok(());
        }
        after = last;
    }
}

/// A page's size and last id, from its one bounds row; `None` when empty.
fn bounds(page: &RowSet) -> Option<(u64, i64)> {
    let row = page.iter().next()?;
    let n = row.int("n").filter(|&n| n > 0)?;
    Some((n as u64, row.int("last")?))
}
