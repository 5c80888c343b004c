//! Realistic demo data for a tenant: menu, tables, staff, customers, a week
//! of orders with items, tips, complimentary orders, preparation times,
//! invoices, KOTs, notifications and webhook endpoints. Deterministic, so a
//! test can recompute any figure from the same seed.

use chrono::{Duration, Utc};

use crate::backends::db::{DbError, Pool, Value};

#[derive(Debug, Clone, Copy)]
pub struct DemoSize {
    pub customers: usize,
    pub orders: usize,
    pub days: i64,
    pub seed: u64,
}

impl Default for DemoSize {
    fn default() -> Self {
        DemoSize {
            customers: 60,
            orders: 400,
            days: 7,
            seed: 42,
        }
    }
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const MENU: &[(&str, &str, i64)] = &[
    ("PBM", "Paneer Butter Masala", 32000),
    ("DMK", "Dal Makhani", 26000),
    ("BNV", "Butter Naan", 6000),
    ("JRC", "Jeera Rice", 18000),
    ("CHB", "Chicken Biryani", 38000),
    ("VBR", "Veg Biryani", 30000),
    ("MDS", "Masala Dosa", 15000),
    ("IDL", "Idli Sambar", 9000),
    ("GJM", "Gulab Jamun", 11000),
    ("MLS", "Mango Lassi", 12000),
    ("MST", "Masala Chai", 5000),
    ("TKM", "Tandoori Chicken", 42000),
];

const FIRST: &[&str] = &[
    "Aarav", "Diya", "Ishaan", "Meera", "Kabir", "Anaya", "Rohan", "Saanvi", "Vikram", "Priya",
];
const LAST: &[&str] = &[
    "Sharma", "Iyer", "Patel", "Reddy", "Gupta", "Nair", "Singh", "Das", "Mehta", "Rao",
];

/// What the demo writes its own rows into, with ids it assumes.
const SEEDED_TABLES: &[&str] = &[
    "menu_items",
    "dining_tables",
    "staff",
    "customers",
    "orders",
];

/// Inserts the demo data; returns a short summary of counts. Only into a
/// database without rows of its own in the tables it seeds: a tenant
/// created over an existing database takes it over, and demo orders would
/// point at its real customers (or collide with its order ids half-way).
pub async fn seed(pool: &Pool, size: DemoSize) -> Result<String, DbError> {
    let counts: Vec<String> = SEEDED_TABLES
        .iter()
        .map(|t| format!("(SELECT COUNT(*) FROM {t})"))
        .collect();
    let held = pool
        .query(&format!("SELECT {} AS n", counts.join(" + ")), &[])
        .await?;
    if let Some(Value::Int(n @ 1..)) = held.rows.first().and_then(|r| r.first()) {
        return Err(DbError::Invalid(format!(
            "the tenant's database already holds {n} rows in {}: demo data goes only into an empty one",
            SEEDED_TABLES.join(", ")
        )));
    }
    let mut rng = Rng(size.seed);
    let now = Utc::now();
    // The rows below point at ids 1..N: the tables are empty, so their id
    // counters start again (rows added and deleted before moved them on).
    let mut stmts: Vec<(String, Vec<Value>)> = match pool {
        Pool::Pg(_) => SEEDED_TABLES
            .iter()
            .map(|t| {
                let restart =
                    format!("SELECT setval(pg_get_serial_sequence('{t}', 'id'), 1, false)");
                (restart, vec![])
            })
            .collect(),
        Pool::Sqlite(_) => {
            let names: Vec<String> = SEEDED_TABLES.iter().map(|t| format!("'{t}'")).collect();
            let restart = format!(
                "DELETE FROM sqlite_sequence WHERE name IN ({})",
                names.join(", ")
            );
            vec![(restart, vec![])]
        }
    };
    let t = |s: &str| Value::Text(s.to_string());

    for (sku, name, price) in MENU {
        stmts.push((
            "INSERT INTO menu_items (sku, name, price_minor) VALUES ($1, $2, $3)".into(),
            vec![t(sku), t(name), Value::Int(*price)],
        ));
    }
    let tables = 12;
    for i in 1..=tables {
        stmts.push((
            "INSERT INTO dining_tables (code, seats) VALUES ($1, $2)".into(),
            vec![Value::Text(format!("T{i}")), Value::Int(2 + (i % 3) * 2)],
        ));
    }
    let staff = ["Asha", "Manoj", "Lakshmi", "Farhan", "Gita", "Joseph"];
    for (i, name) in staff.iter().enumerate() {
        let locked = i == 2;
        stmts.push((
            "INSERT INTO staff (name, role, pin_hash, pin_failed_attempts, pin_locked_at) VALUES ($1, $2, $3, $4, $5)".into(),
            vec![
                t(name),
                t(if i == 0 { "manager" } else { "waiter" }),
                Value::Text(format!("pin:{:04}", rng.below(10_000))),
                Value::Int(if locked { 5 } else { 0 }),
                if locked { Value::Timestamp(now.timestamp_micros()) } else { Value::Null },
            ],
        ));
    }
    for i in 0..size.customers {
        let name = format!(
            "{} {}",
            FIRST[rng.below(FIRST.len() as u64) as usize],
            LAST[rng.below(LAST.len() as u64) as usize]
        );
        let last_order = now - Duration::days(rng.below(900) as i64);
        stmts.push((
            "INSERT INTO customers (name, phone, email, address, last_order_at) VALUES ($1, $2, $3, $4, $5)".into(),
            vec![
                Value::Text(name.clone()),
                Value::Text(format!("+91 98{:08}", 10_000_000 + i)),
                Value::Text(format!("guest{i}@example.com")),
                Value::Text(format!("{} MG Road, Bengaluru", 1 + rng.below(200))),
                Value::Timestamp(last_order.timestamp_micros()),
            ],
        ));
    }
    stmts.push((
        "INSERT INTO webhook_endpoints (url, secret, events) VALUES ($1, $2, $3)".into(),
        vec![
            // .invalid never resolves: a demo delivery can only fail, never leak.
            t("https://hooks.example.invalid/neo-demo"),
            // Standard base64 after `whsec_`, as the Standard Webhooks
            // libraries decode it: a receiver can verify demo deliveries.
            t(&demo_secret([rng.next(), rng.next(), rng.next()])),
            t("order.*"),
        ],
    ));
    pool.transaction(&stmts).await?;
    stmts.clear();

    let statuses = [
        "PAID",
        "PAID",
        "PAID",
        "SERVED",
        "READY",
        "PREPARING",
        "CANCELLED",
    ];
    for o in 0..size.orders {
        let placed = now - Duration::minutes(rng.below((size.days * 24 * 60) as u64) as i64);
        let prep = 300 + rng.below(1500) as i64;
        let complimentary = rng.below(25) == 0;
        let tip = if rng.below(3) == 0 {
            2000 + rng.below(8) as i64 * 1000
        } else {
            0
        };
        let mut items = Vec::new();
        let mut total = 0;
        for _ in 0..1 + rng.below(4) {
            let (_, name, price) = MENU[rng.below(MENU.len() as u64) as usize];
            let qty = 1 + rng.below(3) as i64;
            total += qty * price;
            items.push((name, qty, price));
        }
        let id = (o + 1) as i64;
        stmts.push((
            "INSERT INTO orders (id, table_id, customer_id, staff_id, status, total_minor, tip_minor, complimentary, placed_at, ready_at, prep_seconds) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                .into(),
            vec![
                Value::Int(id),
                Value::Int(1 + rng.below(tables as u64) as i64),
                Value::Int(1 + rng.below(size.customers as u64) as i64),
                Value::Int(1 + rng.below(staff.len() as u64) as i64),
                t(statuses[rng.below(statuses.len() as u64) as usize]),
                Value::Int(if complimentary { 0 } else { total }),
                Value::Int(tip),
                Value::Bool(complimentary),
                Value::Timestamp(placed.timestamp_micros()),
                Value::Timestamp((placed + Duration::seconds(prep)).timestamp_micros()),
                Value::Int(prep),
            ],
        ));
        for (name, qty, price) in items {
            stmts.push((
                "INSERT INTO order_items (order_id, name, quantity, unit_price_minor) VALUES ($1, $2, $3, $4)".into(),
                vec![Value::Int(id), t(name), Value::Int(qty), Value::Int(price)],
            ));
        }
        stmts.push((
            "INSERT INTO kots (order_id, printed_at) VALUES ($1, $2)".into(),
            vec![Value::Int(id), Value::Timestamp(placed.timestamp_micros())],
        ));
        stmts.push((
            "INSERT INTO invoices (order_id, number, amount_minor) VALUES ($1, $2, $3)".into(),
            vec![
                Value::Int(id),
                Value::Text(format!("INV-{id:06}")),
                Value::Int(total),
            ],
        ));
        stmts.push((
            "INSERT INTO notification_outbox (channel, recipient, payload, status, delivered_at) VALUES ($1, $2, $3, $4, $5)".into(),
            vec![
                t("sms"),
                Value::Text(format!("+91 98{:08}", 10_000_000 + o % size.customers)),
                Value::Json(format!("{{\"order\": {id}}}")),
                t(if o % 5 == 0 { "pending" } else { "delivered" }),
                if o % 5 == 0 { Value::Null } else { Value::Timestamp(placed.timestamp_micros()) },
            ],
        ));
        if stmts.len() >= 500 {
            pool.transaction(&stmts).await?;
            stmts.clear();
        }
    }
    // A customer who ordered this week last ordered then, as the POS keeps it.
    stmts.push((
        "UPDATE customers SET last_order_at = \
         (SELECT MAX(o.placed_at) FROM orders o WHERE o.customer_id = customers.id) \
         WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = customers.id)"
            .into(),
        vec![],
    ));
    pool.transaction(&stmts).await?;
    // Explicit ids above: move Postgres' sequence past them.
    if let Pool::Pg(_) = pool {
        pool.execute(
            "SELECT setval('orders_id_seq', (SELECT MAX(id) FROM orders))",
            &[],
        )
        .await?;
    }
    Ok(format!(
        "{} menu items, {tables} tables, {} staff, {} customers, {} orders",
        MENU.len(),
        staff.len(),
        size.customers,
        size.orders
    ))
}

/// A `whsec_` secret: 24 bytes, standard base64 (padded, as
/// `standardwebhooks` decodes it).
fn demo_secret(words: [u64; 3]) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    #[test]
    fn demo_secrets_decode_as_standard_webhooks_keys() {
        let secret = super::demo_secret([1, 2, u64::MAX]);
        let key = secret.strip_prefix("whsec_").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        assert_eq!(bytes.len(), 24);
        assert_ne!(super::demo_secret([1, 2, 3]), secret);
    }
}
