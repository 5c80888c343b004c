//! The owner digest end to end, on both backends: figures match what the
//! seeded orders say for the tenant's business day in its own zone, the mail
//! carries them, a day is digested once, and a failed send is retried later.

use crate::support;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use neo_ops::backends::db::{Pool, Value};
use neo_ops::runtime::Runtime;
use neo_ops::services::Services;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;
use support::proxy::TcpProxy;
use support::{Backend, Deployment, Server};

const MANIFEST: &str = r#"
[plugins.owner-digest]
component = "owner_digest.wasm"
command = true
schedules = [{ cron = "0 20 * * *", tz = "Asia/Kolkata", args = ["--all-tenants"] }]
queue = { name = "digest", max_attempts = 6, backoff = "1s" }
grants = { db = ["master", "tenant:*"], kv = ["digest:"], mail = true, queues = ["digest"] }
limits = { memory = "64MiB", timeout = "60s" }
config = { top_items = "5", lock_ttl = "2m" }
"#;

const DAY: &str = "2026-11-24";
const KOLKATA: Tz = chrono_tz::Asia::Kolkata;

// ---- seed data and the figures it implies -----------------------------------

struct Line {
    name: &'static str,
    qty: i64,
    unit: i64,
}

struct Order {
    id: i64,
    placed: &'static str,
    status: &'static str,
    tip: i64,
    comp: bool,
    prep: Option<i64>,
    deleted: bool,
    lines: Vec<Line>,
}

fn line(name: &'static str, qty: i64, unit: i64) -> Line {
    Line { name, qty, unit }
}

/// The Kolkata day 2026-11-24 is [2026-11-23T18:30Z, 2026-11-24T18:30Z).
fn orders() -> Vec<Order> {
    let o = |id, placed, status, tip, comp, prep, lines| Order {
        id,
        placed,
        status,
        tip,
        comp,
        prep,
        deleted: false,
        lines,
    };
    vec![
        // 00:00 IST: the first instant of the day (still the 23rd in UTC).
        o(
            1,
            "2026-11-23T18:30:00Z",
            "PAID",
            5000,
            false,
            Some(600),
            vec![
                line("Paneer Butter Masala", 2, 32000),
                line("Butter Naan", 4, 6000),
            ],
        ),
        o(
            2,
            "2026-11-24T06:15:00Z",
            "PAID",
            2550,
            true,
            Some(905),
            vec![line("Dal Makhani", 1, 26000), line("Butter Naan", 2, 6000)],
        ),
        o(
            3,
            "2026-11-24T12:00:00Z",
            "SERVED",
            0,
            true,
            None,
            vec![line("Masala Chai", 3, 5000), line("Mango Lassi", 1, 12000)],
        ),
        // 23:59:59 IST, a catering order: its revenue needs lakh grouping.
        o(
            4,
            "2026-11-24T18:29:59Z",
            "PAID",
            1000,
            false,
            Some(1201),
            vec![
                line("Chicken Biryani", 300, 38000),
                line("Butter Naan", 1, 6000),
                line("Gulab Jamun", 2, 11000),
            ],
        ),
        // Cancelled: not counted anywhere.
        o(
            5,
            "2026-11-24T10:00:00Z",
            "CANCELLED",
            9999,
            true,
            Some(100),
            vec![line("Paneer Butter Masala", 10, 32000)],
        ),
        // 00:00 IST on the 25th: the same UTC day, the next business day.
        o(
            6,
            "2026-11-24T18:30:00Z",
            "PAID",
            7777,
            true,
            Some(50),
            vec![line("Tandoori Chicken", 50, 42000)],
        ),
        // 23:59:59 IST on the 23rd: the previous business day.
        o(
            7,
            "2026-11-23T18:29:59Z",
            "PAID",
            4444,
            true,
            Some(10),
            vec![line("Masala Chai", 40, 5000)],
        ),
        // Tuesday 2026-11-17, the same weekday a week earlier: two orders
        // count for the comparison, a cancelled one does not.
        o(
            9,
            "2026-11-17T07:00:00Z",
            "PAID",
            0,
            false,
            Some(300),
            vec![line("Dal Makhani", 10, 26000)],
        ),
        o(
            10,
            "2026-11-16T18:30:00Z",
            "SERVED",
            0,
            false,
            None,
            vec![line("Masala Chai", 20, 5000)],
        ),
        o(
            11,
            "2026-11-17T09:00:00Z",
            "CANCELLED",
            0,
            false,
            None,
            vec![line("Masala Chai", 99, 5000)],
        ),
        Order {
            deleted: true,
            ..o(
                8,
                "2026-11-24T09:00:00Z",
                "PAID",
                3000,
                true,
                Some(300),
                vec![line("Jeera Rice", 5, 18000)],
            )
        },
    ]
}

/// Breaker events of endpoint 1: (event, at).
const BREAKER_EVENTS: &[(&str, &str)] = &[
    ("open", "2026-11-23T18:30:00Z"),
    ("open", "2026-11-24T05:00:00Z"),
    ("half_open", "2026-11-24T05:01:00Z"),
    ("close", "2026-11-24T05:02:00Z"),
    ("open", "2026-11-24T17:59:59Z"),
    ("open", "2026-11-24T18:30:00Z"),
    ("open", "2026-11-23T12:00:00Z"),
];

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

#[derive(Debug, PartialEq)]
struct Expected {
    orders: i64,
    /// Gross sales: the counted orders' totals.
    gross: i64,
    /// (orders, gross) of the same weekday a week earlier.
    last_week: (i64, i64),
    cancelled: i64,
    complimentary: i64,
    tips: i64,
    avg_prep: Option<f64>,
    /// (name, quantity, revenue), best first.
    top: Vec<(String, i64, i64)>,
    opens: i64,
    /// Local `HH:MM` the figures stop at, for a day not over.
    until: Option<String>,
    /// The day's weekday, as the comparison line names it.
    weekday: String,
}

/// The digest's figures for a whole day, recomputed from the seed in plain Rust.
fn expected(orders: &[Order], events: &[(&str, &str)], tz: Tz, day: &str) -> Expected {
    expected_until(orders, events, tz, day, None)
}

/// The figures of a day not over at `now`: the day and the same weekday a
/// week before, each up to now's local time (zones without DST here).
fn expected_until(
    orders: &[Order],
    events: &[(&str, &str)],
    tz: Tz,
    day: &str,
    now: Option<DateTime<Utc>>,
) -> Expected {
    let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
    let local = |d: NaiveDate| {
        tz.from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
            .single()
            .unwrap()
            .to_utc()
    };
    let week = chrono::Duration::days(7);
    let cut = |end: DateTime<Utc>, by: chrono::Duration| now.map_or(end, |n| end.min(n - by));
    let (start, end) = (
        local(day),
        cut(local(day.succ_opt().unwrap()), chrono::Duration::zero()),
    );
    let in_day = |s: &str| (start..end).contains(&utc(s));
    let live: Vec<&Order> = orders
        .iter()
        .filter(|o| in_day(o.placed) && !o.deleted)
        .collect();
    let counted: Vec<&Order> = live
        .iter()
        .copied()
        .filter(|o| o.status != "CANCELLED")
        .collect();
    let total = |o: &Order| o.lines.iter().map(|l| l.qty * l.unit).sum::<i64>();
    let week_before = day - chrono::Days::new(7);
    let (from, to) = (
        local(week_before),
        cut(local(week_before.succ_opt().unwrap()), week),
    );
    let earlier: Vec<&Order> = orders
        .iter()
        .filter(|o| (from..to).contains(&utc(o.placed)) && !o.deleted && o.status != "CANCELLED")
        .collect();
    let preps: Vec<i64> = counted.iter().filter_map(|o| o.prep).collect();
    let mut items: HashMap<&str, (i64, i64)> = HashMap::new();
    for l in counted.iter().flat_map(|o| &o.lines) {
        let e = items.entry(l.name).or_default();
        e.0 += l.qty;
        e.1 += l.qty * l.unit;
    }
    let mut top: Vec<(String, i64, i64)> = items
        .into_iter()
        .map(|(n, (q, r))| (n.to_string(), q, r))
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
    top.truncate(5);
    Expected {
        orders: counted.len() as i64,
        gross: counted.iter().map(|o| total(o)).sum(),
        last_week: (earlier.len() as i64, earlier.iter().map(|o| total(o)).sum()),
        cancelled: (live.len() - counted.len()) as i64,
        complimentary: counted.iter().filter(|o| o.comp).count() as i64,
        tips: counted.iter().map(|o| o.tip).sum(),
        avg_prep: (!preps.is_empty())
            .then(|| preps.iter().sum::<i64>() as f64 / preps.len() as f64),
        top,
        opens: events
            .iter()
            .filter(|(e, at)| *e == "open" && in_day(at))
            .count() as i64,
        until: now.map(|n| n.with_timezone(&tz).format("%H:%M").to_string()),
        weekday: day.format("%A").to_string(),
    }
}

/// Paise as the digest prints them: `Rs 1,14,000.00` (Indian grouping).
fn rupees(minor: i64) -> String {
    let whole: Vec<char> = (minor / 100).to_string().chars().rev().collect();
    let mut grouped = String::new();
    for (i, c) in whole.iter().enumerate() {
        if i == 3 || (i > 3 && i % 2 == 1) {
            grouped.push(',');
        }
        grouped.push(*c);
    }
    let grouped: String = grouped.chars().rev().collect();
    format!("Rs {grouped}.{:02}", minor % 100)
}

/// The lines the plain-text body must contain for `e`.
fn expected_lines(e: &Expected) -> Vec<String> {
    let avg = e.avg_prep.unwrap().round() as i64;
    let percent = |now: i64, before: i64| {
        let p = (now - before) as f64 / before as f64 * 100.0;
        if p >= 0.0 {
            format!("up {p:.1}%")
        } else {
            format!("down {:.1}%", -p)
        }
    };
    let orders = |n: i64| match n {
        1 => "1 order".to_string(),
        n => format!("{n} orders"),
    };
    let times = |n: i64| match n {
        0 => "never".to_string(),
        1 => "once".to_string(),
        n => format!("{n} times"),
    };
    let (before_orders, before_gross) = e.last_week;
    let label = match &e.until {
        Some(t) => format!("Last {} until {t}", e.weekday),
        None => format!("Last {}", e.weekday),
    };
    let last_week = if before_orders == 0 {
        format!("{label}: no sales")
    } else {
        format!(
            "{label}: {} from {} (sales {}, orders {})",
            rupees(before_gross),
            orders(before_orders),
            percent(e.gross, before_gross),
            percent(e.orders, before_orders)
        )
    };
    let mut lines = vec![
        format!("Sales: {} from {}", rupees(e.gross), orders(e.orders)),
        last_week,
        format!("Cancelled orders (not in sales): {}", e.cancelled),
        format!(
            "Average time to prepare an order: {}m {:02}s",
            avg / 60,
            avg % 60
        ),
        format!("Complimentary orders: {}", e.complimentary),
        format!("Tips: {}", rupees(e.tips)),
        format!(
            "Order updates to your connected apps paused: {}",
            times(e.opens)
        ),
    ];
    for (i, (name, qty, rev)) in e.top.iter().enumerate() {
        lines.push(format!("  {}. {name} x{qty}, {}", i + 1, rupees(*rev)));
    }
    lines
}

// ---- harness helpers ----------------------------------------------------------

fn ts(s: &str) -> Value {
    Value::Timestamp(utc(s).timestamp_micros())
}

async fn seed(pool: &Pool, orders: &[Order], events: &[(&str, &str)]) {
    let mut stmts: Vec<(String, Vec<Value>)> = vec![(
        "INSERT INTO webhook_endpoints (id, url, secret) VALUES (1, $1, $2)".into(),
        vec![
            Value::Text("http://127.0.0.1:9/hook".into()),
            Value::Text("s".into()),
        ],
    )];
    for o in orders {
        let total: i64 = o.lines.iter().map(|l| l.qty * l.unit).sum();
        stmts.push((
            "INSERT INTO orders (id, status, total_minor, tip_minor, complimentary, placed_at, \
             prep_seconds, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                .into(),
            vec![
                Value::Int(o.id),
                Value::Text(o.status.into()),
                Value::Int(total),
                Value::Int(o.tip),
                Value::Bool(o.comp),
                ts(o.placed),
                o.prep.map(Value::Int).unwrap_or(Value::Null),
                if o.deleted { ts(o.placed) } else { Value::Null },
            ],
        ));
        for l in &o.lines {
            stmts.push((
                "INSERT INTO order_items (order_id, name, quantity, unit_price_minor) \
                 VALUES ($1, $2, $3, $4)"
                    .into(),
                vec![
                    Value::Int(o.id),
                    Value::Text(l.name.into()),
                    Value::Int(l.qty),
                    Value::Int(l.unit),
                ],
            ));
        }
    }
    for (event, at) in events {
        stmts.push((
            "INSERT INTO webhook_breaker_events (endpoint_id, event, at) VALUES (1, $1, $2)".into(),
            vec![Value::Text(event.to_string()), ts(at)],
        ));
    }
    pool.transaction(&stmts).await.unwrap();
}

/// Creates a tenant with an owner (or none) and a time zone.
async fn tenant(server: &Server, name: &str, owner: Option<&str>, zone: &str) -> Pool {
    server
        .services
        .db
        .create_tenant(name, &format!("{name} kitchen"))
        .await
        .unwrap();
    server
        .master()
        .execute(
            "UPDATE tenants SET owner_email = $1, time_zone = $2 WHERE name = $3",
            &[
                owner.map_or(Value::Null, |o| Value::Text(o.into())),
                Value::Text(zone.into()),
                Value::Text(name.into()),
            ],
        )
        .await
        .unwrap();
    server.services.db.tenant(name).await.unwrap()
}

async fn digest(server: &Server, args: &[&str]) -> Result<String, neo_ops::runtime::InvokeError> {
    server.command("owner-digest", args).await
}

/// Mail as text with LF line ends (SMTP delivers CRLF), long lines joined
/// again where quoted-printable broke them (`=` at a line's end).
/// (status, error) of each recorded owner-digest run.
async fn digest_runs(server: &Server) -> neo_ops::backends::db::RowSet {
    server
        .master()
        .query(
            "SELECT status, error FROM runs WHERE plugin = 'owner-digest'",
            &[],
        )
        .await
        .unwrap()
}

fn mail(dep: &Deployment) -> Vec<String> {
    dep.sent_mail()
        .into_iter()
        .map(|m| m.replace("\r\n", "\n").replace("=\n", ""))
        .collect()
}

/// Rows of the send log: (tenant, business_day, sent?, message_id).
async fn send_log(server: &Server) -> Vec<(String, String, bool, Option<String>)> {
    let rows = server
        .master()
        .query(
            "SELECT tenant, business_day, sent_at, message_id FROM digest_sends \
             ORDER BY tenant, business_day",
            &[],
        )
        .await
        .unwrap();
    rows.rows
        .into_iter()
        .map(|r| {
            let text = |v: &Value| match v {
                Value::Text(s) => Some(s.clone()),
                _ => None,
            };
            (
                text(&r[0]).unwrap(),
                text(&r[1]).unwrap(),
                matches!(r[2], Value::Timestamp(_)),
                text(&r[3]),
            )
        })
        .collect()
}

// ---- tests ---------------------------------------------------------------------

async fn figures_mail_and_once_per_day(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MANIFEST, "a").await;
    let acme = tenant(&server, "acme", Some("owner@acme.example"), "Asia/Kolkata").await;
    tenant(&server, "globex", None, "Europe/London").await;
    let seeded = orders();
    seed(&acme, &seeded, BREAKER_EVENTS).await;
    let want = expected(&seeded, BREAKER_EVENTS, KOLKATA, DAY);
    // The seed is built so the zone matters: a UTC day would give other figures.
    assert_ne!(want, expected(&seeded, BREAKER_EVENTS, chrono_tz::UTC, DAY));
    assert_eq!((want.orders, want.cancelled, want.opens), (4, 1, 3));
    assert_eq!(want.last_week, (2, 360_000));

    // Dry run: the figures, and nothing sent or recorded.
    let out = digest(
        &server,
        &["--tenant", "acme", "--date", DAY, "--dry-run", "--json"],
    )
    .await
    .unwrap();
    let json: Json = serde_json::from_str(&out).unwrap();
    let r = &json["data"]["results"][0];
    assert_eq!(r["status"], "dry-run", "{out}");
    assert_eq!(r["business_day"], DAY);
    let d = &r["digest"];
    assert_eq!(d["orders"], want.orders, "{out}");
    assert_eq!(d["cancelled_excluded"], want.cancelled);
    assert_eq!(d["complimentary_orders"], want.complimentary);
    assert_eq!(d["tips_minor"], want.tips);
    assert_eq!(d["gross_sales_minor"], want.gross);
    assert_eq!(d["last_week"]["orders"], want.last_week.0);
    assert_eq!(d["last_week"]["gross_sales_minor"], want.last_week.1);
    assert_eq!(d["avg_prep_seconds"].as_f64(), want.avg_prep);
    assert_eq!(d["breaker_opens"], want.opens);
    let top: Vec<(String, i64, i64)> = d["top_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["quantity"].as_i64().unwrap(),
                i["revenue_minor"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(top, want.top);
    assert!(mail(&dep).is_empty(), "a dry run sends nothing");
    assert!(
        send_log(&server).await.is_empty(),
        "a dry run records nothing"
    );

    // The real run: one mail to the owner, with every figure, text and HTML.
    let out = digest(&server, &["--tenant", "acme", "--date", DAY])
        .await
        .unwrap();
    assert!(
        out.contains("acme 2026-11-24: sent to owner@acme.example"),
        "{out}"
    );
    let sent = mail(&dep);
    assert_eq!(sent.len(), 1);
    let m = &sent[0];
    assert!(m.contains("To: owner@acme.example"), "{m}");
    assert!(
        m.contains("Subject: Daily digest for acme kitchen: 2026-11-24"),
        "{m}"
    );
    assert!(
        m.contains("Business day: Tue 24 Nov 2026 (Asia/Kolkata)"),
        "{m}"
    );
    for l in expected_lines(&want) {
        assert!(m.contains(&format!("{l}\n")), "missing line {l:?} in\n{m}");
    }
    assert!(m.contains("Rs 1,14,000.00"), "lakh grouping: {m}");
    assert!(!m.contains("Dal Makhani"), "only the top 5 items");
    assert!(m.contains("Content-Type: text/html"), "{m}");
    assert!(m.contains("<td>&#8377;1,14,000.00</td>"), "{m}");
    let log = send_log(&server).await;
    assert_eq!(log.len(), 1);
    let (t, day, was_sent, id) = &log[0];
    assert_eq!((t.as_str(), day.as_str(), *was_sent), ("acme", DAY, true));
    let id = id.as_deref().unwrap();
    assert!(m.contains(&format!("Message-ID: {id}")), "{id} in {m}");
    assert!(out.contains(id), "{out}");

    // Again, and again for every tenant: nothing more is sent.
    let out = digest(&server, &["--tenant", "acme", "--date", DAY])
        .await
        .unwrap();
    assert_eq!(out, "acme 2026-11-24: skipped, already sent\n");
    let out = digest(&server, &["--all-tenants", "--date", DAY, "--json"])
        .await
        .unwrap();
    let json: Json = serde_json::from_str(&out).unwrap();
    let results = json["data"]["results"].as_array().unwrap();
    let summary: Vec<(&str, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["tenant"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                r["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("acme", "skipped", "already sent"),
            ("globex", "skipped", "no owner email")
        ]
    );
    assert_eq!(mail(&dep).len(), 1);

    // Two runs racing for a fresh day (two replicas sharing Redis on the real
    // backends): exactly one mail. The day has no orders; it still goes out.
    let other = match backend {
        Backend::Real => Some(dep.start(MANIFEST, "b").await),
        Backend::Embedded => None, // the in-process kv is per process
    };
    let second = other.as_ref().unwrap_or(&server);
    let args = ["--tenant", "acme", "--date", "2026-11-20"];
    let (x, y) = tokio::join!(digest(&server, &args), digest(second, &args));
    let outs = [x.unwrap(), y.unwrap()];
    assert_eq!(
        outs.iter().filter(|o| o.contains("sent to")).count(),
        1,
        "{outs:?}"
    );
    assert!(outs.iter().any(|o| o.contains("skipped")), "{outs:?}");
    let sent = mail(&dep);
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .any(|m| m.contains("Sales: Rs 0.00 from 0 orders")
                && m.contains("Average time to prepare an order: n/a")
                && m.contains("No items sold."))
    );
    if let Some(b) = other {
        b.stop().await.unwrap();
    }

    // Bad input is refused, quoting it.
    let err = digest(&server, &["--tenant", "acme", "--date", "24/11/2026"])
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.to_string(),
        "bad date \"24/11/2026\" (expected YYYY-MM-DD, 1970 to 9999)"
    );
    // A day still to come is refused: its send would be recorded now.
    let err = digest(&server, &["--tenant", "acme", "--date", "9999-01-01"])
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("date 9999-01-01 is after today"),
        "{err}"
    );
    let err = digest(&server, &["--tenant", "nope"]).await.unwrap_err();
    assert_eq!(
        (err.status(), err.to_string()),
        (404, "tenant \"nope\" not found".into())
    );
    assert!(
        digest(&server, &[])
            .await
            .unwrap_err()
            .to_string()
            .starts_with("usage: owner-digest")
    );
    server.stop().await.unwrap();
}

on_both_backends!(
    digest_figures_and_once_per_day,
    figures_mail_and_once_per_day
);

/// A replica whose mail cannot go out: SMTP on a closed port (real backends),
/// or the outbox path taken by a plain file (embedded; `unblock_outbox` undoes it).
async fn runtime_with_mail_down(dep: &Deployment) -> Arc<Runtime> {
    let mut settings = dep.settings("down");
    match dep.backend {
        Backend::Real => {
            let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = closed.local_addr().unwrap().port();
            drop(closed);
            settings.smtp.as_mut().unwrap().port = port;
        }
        Backend::Embedded => {}
    }
    // Without the queue grant, the schedule digests every tenant itself.
    let unqueued = MANIFEST.replace(r#", queues = ["digest"]"#, "");
    let manifest = neo_ops::manifest::load(&dep.manifest(&unqueued)).unwrap();
    let services = Services::connect(settings).await.unwrap();
    if dep.backend == Backend::Embedded {
        // After connecting: the mailer creates the outbox dir when it starts.
        let outbox = dep.data_dir("a").join("outbox");
        std::fs::remove_dir_all(&outbox).unwrap();
        std::fs::write(&outbox, b"not a directory").unwrap();
    }
    Arc::new(Runtime::load(&manifest, services).unwrap())
}

fn unblock_outbox(dep: &Deployment) {
    if dep.backend == Backend::Embedded {
        let outbox = dep.data_dir("a").join("outbox");
        std::fs::remove_file(&outbox).unwrap();
        std::fs::create_dir(&outbox).unwrap();
    }
}

async fn smtp_down_fails_then_next_run_sends(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MANIFEST, "a").await;
    let acme = tenant(&server, "acme", Some("owner@acme.example"), "Asia/Kolkata").await;
    let seeded = orders();
    seed(&acme, &seeded, BREAKER_EVENTS).await;

    let down = runtime_with_mail_down(&dep).await;
    let args = ["--tenant", "acme", "--date", DAY]
        .map(String::from)
        .to_vec();
    let err = neo_ops::triggers::command::run(&down, "owner-digest", args)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 503, "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("digest for tenant \"acme\" (2026-11-24) was not sent: "),
        "{msg}"
    );
    assert!(
        msg.ends_with("(nothing recorded; the next run or retry sends it)"),
        "{msg}"
    );
    if backend == Backend::Real {
        // The relay's name and its error stay in the host's log.
        assert!(
            msg.contains("the mail server refused the message or failed (details in the host log)")
                && !msg.contains("127.0.0.1"),
            "{msg}"
        );
    }
    assert!(mail(&dep).is_empty(), "nothing reached the mail server");
    assert!(
        send_log(&server).await.iter().all(|r| !r.2),
        "no sent_at without a sent mail"
    );

    // Over every tenant with --json: the failure, and what each tenant got.
    tenant(&server, "globex", None, "Asia/Kolkata").await;
    let args = ["--all-tenants", "--date", DAY, "--json"]
        .map(String::from)
        .to_vec();
    let out = neo_ops::triggers::command::run(&down, "owner-digest", args)
        .await
        .unwrap();
    assert_eq!(out.status, 503);
    let doc: Json = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(doc["ok"], false, "{doc}");
    let said = doc["error"]["message"].as_str().unwrap();
    assert!(
        said.starts_with("1 of 2 digests failed (0 sent): "),
        "{said}"
    );
    let statuses: Vec<(&str, &str)> = doc["data"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["tenant"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [("acme", "failed"), ("globex", "skipped")]);

    // Digesting in its own run (no queue), the scheduled run fails loudly
    // too: its run is recorded as an error.
    let slot = utc("2026-11-24T14:30:00Z");
    neo_ops::triggers::schedule::fire(&down, "owner-digest", 0, slot).await;
    let runs = digest_runs(&server).await;
    assert_eq!(runs.rows.len(), 1);
    assert_eq!(runs.rows[0][0], Value::Text("error".into()));
    assert!(
        matches!(&runs.rows[0][1], Value::Text(e) if e.contains("was not sent")),
        "{:?}",
        runs.rows[0]
    );

    // With mail back, the next run sends exactly one digest, then no more.
    unblock_outbox(&dep);
    let out = digest(&server, &["--tenant", "acme", "--date", DAY])
        .await
        .unwrap();
    assert!(out.contains("sent to owner@acme.example"), "{out}");
    let want = expected(&seeded, BREAKER_EVENTS, KOLKATA, DAY);
    let sent = mail(&dep);
    assert_eq!(sent.len(), 1);
    for l in expected_lines(&want) {
        assert!(sent[0].contains(&l), "missing {l:?}");
    }
    let out = digest(&server, &["--tenant", "acme", "--date", DAY])
        .await
        .unwrap();
    assert!(out.contains("already sent"), "{out}");
    assert_eq!(mail(&dep).len(), 1);
    let log = send_log(&server).await;
    assert_eq!(log.len(), 1);
    assert!(log[0].2 && log[0].3.is_some(), "{log:?}");
    server.stop().await.unwrap();
}

on_both_backends!(smtp_down, smtp_down_fails_then_next_run_sends);

/// The nightly 20:00 IST slot digests every tenant's own business day once:
/// today so far in Kolkata; in New York, where it is 09:30, yesterday whole.
async fn nightly_schedule_covers_every_tenant(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MANIFEST, "a").await;
    let acme = tenant(&server, "acme", Some("owner@acme.example"), "Asia/Kolkata").await;
    let globex = tenant(
        &server,
        "globex",
        Some("boss@globex.example"),
        "America/New_York",
    )
    .await;
    tenant(&server, "initech", None, "Asia/Kolkata").await;
    let mut seeded = orders();
    // Last Tuesday at 21:00 IST: after the slot's time of day, so not in
    // the comparison (today's figures stop at 20:00 too).
    seeded.push(Order {
        id: 12,
        placed: "2026-11-17T15:30:00Z",
        status: "PAID",
        tip: 0,
        comp: false,
        prep: None,
        deleted: false,
        lines: vec![line("Gulab Jamun", 7, 11000)],
    });
    seed(&acme, &seeded, BREAKER_EVENTS).await;
    // 20:00 IST on the 24th is 09:30 in New York, where the 23rd is the day
    // just over: the order at 23:59:59 EST is in it, the one at 00:30 is not.
    let ny = vec![
        Order {
            id: 1,
            placed: "2026-11-24T05:30:00Z", // 00:30 EST on the 24th
            status: "PAID",
            tip: 1500,
            comp: false,
            prep: Some(420),
            deleted: false,
            lines: vec![line("Bagel", 3, 45000)],
        },
        Order {
            id: 2,
            placed: "2026-11-24T04:59:59Z", // 23:59:59 EST on the 23rd
            status: "PAID",
            tip: 9000,
            comp: true,
            prep: Some(60),
            deleted: false,
            lines: vec![line("Pretzel", 9, 20000)],
        },
    ];
    seed(&globex, &ny, &[("open", "2026-11-24T05:00:00Z")]).await;
    // What the slot of the 23rd sent before the day just over was digested
    // whole (an older version sent New York's 23rd so far, at 09:30): it
    // covers the 23rd up to its sending only, so the 23rd still goes whole.
    server
        .master()
        .execute(
            "INSERT INTO digest_sends (tenant, business_day, sent_at, message_id) \
             VALUES ('globex', '2026-11-23', $1, 'earlier')",
            &[ts("2026-11-23T14:30:05Z")],
        )
        .await
        .unwrap();

    let slot = utc("2026-11-24T14:30:00Z");
    let due = neo_ops::triggers::schedule::due_between(
        &neo_ops::manifest::load(&dep.manifest(MANIFEST)).unwrap(),
        utc("2026-11-24T00:00:00Z"),
        utc("2026-11-25T00:00:00Z"),
    );
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].at, slot, "20:00 Asia/Kolkata");
    neo_ops::triggers::schedule::fire(&server.runtime, "owner-digest", 0, slot).await;

    let runs = server
        .master()
        .query("SELECT status FROM runs WHERE plugin = 'owner-digest'", &[])
        .await
        .unwrap();
    assert_eq!(runs.rows, vec![vec![Value::Text("ok".into())]]);
    // One job per tenant on the digest queue, each digesting the slot's day.
    let sent_rows = || async {
        let log = send_log(&server).await;
        log.iter().filter(|r| r.2).count()
    };
    support::wait_until("both digests are sent", || async { sent_rows().await == 2 }).await;
    support::wait_until("every digest job is done", || async {
        support::queued_jobs(&server, "digest").await.is_empty()
    })
    .await;
    let log: Vec<(String, String, bool)> = send_log(&server)
        .await
        .into_iter()
        .map(|(t, d, s, _)| (t, d, s))
        .collect();
    assert_eq!(
        log,
        vec![
            ("acme".into(), DAY.into(), true),
            ("globex".into(), "2026-11-23".into(), true)
        ]
    );
    let sent = mail(&dep);
    assert_eq!(sent.len(), 2);
    let to = |who: &str| {
        sent.iter()
            .find(|m| m.contains(&format!("To: {who}")))
            .unwrap()
    };
    // At 20:00 IST the day is not over: its figures, and last Tuesday's,
    // stop at 20:00 (the catering order at 23:59:59 is not in yet).
    let want = expected_until(&seeded, BREAKER_EVENTS, KOLKATA, DAY, Some(slot));
    let whole = expected(&seeded, BREAKER_EVENTS, KOLKATA, DAY);
    assert_eq!((want.orders, whole.orders), (3, 4));
    assert_eq!((want.last_week.0, whole.last_week.0), (2, 3));
    let acme_mail = to("owner@acme.example");
    assert!(
        acme_mail.contains("Business day: Tue 24 Nov 2026 until 20:00"),
        "{acme_mail}"
    );
    for l in expected_lines(&want) {
        assert!(acme_mail.contains(&l), "acme: {l:?} in {acme_mail}");
    }
    let ny_tz: Tz = "America/New_York".parse().unwrap();
    let ny_events = [("open", "2026-11-24T05:00:00Z")];
    let want = expected(&ny, &ny_events, ny_tz, "2026-11-23");
    assert_eq!((want.orders, want.tips, want.opens), (1, 9000, 0));
    let globex_mail = to("boss@globex.example");
    assert!(
        globex_mail.contains("Business day: Mon 23 Nov 2026 (America/New_York)"),
        "{globex_mail}"
    );
    for l in expected_lines(&want) {
        assert!(globex_mail.contains(&l), "globex: {l:?}");
    }

    // Another replica's catch-up runs of the same days send nothing more.
    let b = dep.start(MANIFEST, "b").await;
    for (tenant, day) in [("acme", DAY), ("globex", "2026-11-23")] {
        let out = digest(&b, &["--tenant", tenant, "--date", day])
            .await
            .unwrap();
        assert_eq!(out, format!("{tenant} {day}: skipped, already sent\n"));
    }
    let out = digest(&b, &["--tenant", "initech", "--date", DAY])
        .await
        .unwrap();
    assert_eq!(out, "initech 2026-11-24: skipped, no owner email\n");
    assert_eq!(mail(&dep).len(), 2);
    b.stop().await.unwrap();
    server.stop().await.unwrap();
}

on_both_backends!(nightly_schedule, nightly_schedule_covers_every_tenant);

/// A relay down at 20:00 fails the tenant's digest job; the queue retries
/// it, and once the relay is back the retry sends the slot's day, cut at
/// 20:00 as the slot was, exactly once.
async fn queued_digest_retried_after_relay_outage(backend: Backend) {
    let dep = Deployment::with_smtp(backend).await;
    let mut settings = dep.settings("a");
    let smtp = settings.smtp.as_mut().unwrap();
    let relay = TcpProxy::start(format!("127.0.0.1:{}", smtp.port).parse().unwrap()).await;
    smtp.port = relay.addr.port();
    let services = Services::connect(settings).await.unwrap();
    let server = dep.start_with_services(MANIFEST, services).await;
    let acme = tenant(&server, "acme", Some("owner@acme.example"), "Asia/Kolkata").await;
    let seeded = orders();
    seed(&acme, &seeded, BREAKER_EVENTS).await;

    relay.set_up(false);
    let slot = utc("2026-11-24T14:30:00Z");
    neo_ops::triggers::schedule::fire(&server.runtime, "owner-digest", 0, slot).await;
    support::wait_for_failed_job(&server, "digest", "(2026-11-24) was not sent").await;
    assert!(mail(&dep).is_empty());
    assert!(send_log(&server).await.iter().all(|r| !r.2));

    relay.set_up(true);
    support::wait_until("a retry sends the digest", || async {
        send_log(&server).await.iter().any(|r| r.2)
    })
    .await;
    support::wait_until("the job is done", || async {
        support::queued_jobs(&server, "digest").await.is_empty()
    })
    .await;
    let sent = mail(&dep);
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].contains("Business day: Tue 24 Nov 2026 until 20:00"),
        "{}",
        sent[0]
    );
    let want = expected_until(&seeded, BREAKER_EVENTS, KOLKATA, DAY, Some(slot));
    for l in expected_lines(&want) {
        assert!(sent[0].contains(&l), "missing {l:?}");
    }
    let dead = server
        .services
        .kv
        .list_len(&neo_ops::backends::queue::dead_letter_key("digest"))
        .await
        .unwrap();
    assert_eq!(dead, 0);
    server.stop().await.unwrap();
}

on_both_backends!(queued_retry, queued_digest_retried_after_relay_outage);

/// Redis is down as the 20:00 slot fans out, for 20 s (a Sentinel
/// failover takes longer than that): the run tries the tenant it could not
/// queue again, so the slot (claimed once) still ends `ok` and the owner
/// still gets that day's digest. Before, the run gave up after 15 s, ended
/// in error, and the day's digest was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_at_the_fan_out_loses_no_digest() {
    let dep = Deployment::new(Backend::Real).await;
    let (server, redis) = dep.start_with_redis_proxy(MANIFEST).await;
    let acme = tenant(&server, "acme", Some("owner@acme.example"), "Asia/Kolkata").await;
    seed(&acme, &orders(), BREAKER_EVENTS).await;

    redis.set_up(false);
    let back = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(20)).await;
        redis.set_up(true);
        redis
    });
    let slot = utc("2026-11-24T14:30:00Z");
    neo_ops::triggers::schedule::fire(&server.runtime, "owner-digest", 0, slot).await;
    let _redis = back.await.unwrap();
    let runs = digest_runs(&server).await;
    assert_eq!(
        runs.rows,
        vec![vec![Value::Text("ok".into()), Value::Null]],
        "the slot's run"
    );
    support::wait_until("the digest is sent", || async {
        send_log(&server).await.iter().any(|r| r.2)
    })
    .await;
    assert_eq!(mail(&dep).len(), 1);
    server.stop().await.unwrap();
}

/// Someone sending today's digest by hand (at 03:00, say) does not stand
/// in for the evening's: the scheduled run still sends, with the figures up
/// to its cut, and is then the day's digest; a second run by hand is
/// skipped. A schedule asked for a dry run sends nothing and queues nothing.
async fn a_digest_sent_by_hand_leaves_the_evenings_to_go(backend: Backend) {
    let dep = Deployment::new(backend).await;
    // A zone where it is evening now (20:00 to 22:59): today stays today
    // for the next minutes, and a scheduled run digests today too (before
    // 20:00 local it takes yesterday). One of the whole-hour zones has it.
    let now = Utc::now();
    let zone = (-12..=14)
        .map(|east: i32| match east {
            0 => "Etc/GMT".to_string(),
            e if e > 0 => format!("Etc/GMT-{e}"),
            e => format!("Etc/GMT+{}", -e),
        })
        .find(|z| {
            let hour = now.with_timezone(&z.parse::<Tz>().unwrap()).format("%H");
            ("20".."23").contains(&hour.to_string().as_str())
        })
        .unwrap();
    let slot = now + chrono::Duration::seconds(2);

    let dry = MANIFEST.replace(
        r#"args = ["--all-tenants"]"#,
        r#"args = ["--all-tenants", "--dry-run"]"#,
    );
    let server = dep.start(&dry, "a").await;
    tenant(&server, "acme", Some("owner@acme.example"), &zone).await;
    neo_ops::triggers::schedule::fire(&server.runtime, "owner-digest", 0, slot).await;
    assert_eq!(
        digest_runs(&server).await.rows,
        vec![vec![Value::Text("ok".into()), Value::Null]]
    );
    assert!(support::queued_jobs(&server, "digest").await.is_empty());
    assert!(mail(&dep).is_empty());
    assert!(send_log(&server).await.is_empty());
    server.stop().await.unwrap();

    let server = dep.start(MANIFEST, "b").await;
    let out = digest(&server, &["--tenant", "acme"]).await.unwrap();
    assert!(
        out.contains(
            "sent to owner@acme.example ("
        ) && out.ends_with(
            "; the day is not over: the scheduled digest still goes, with the figures up to its time\n"
        ),
        "{out}"
    );
    let out = digest(&server, &["--tenant", "acme"]).await.unwrap();
    assert!(out.ends_with(": skipped, already sent\n"), "{out}");
    assert_eq!(mail(&dep).len(), 1);

    // The evening's slot (here, a moment from now) covers more: it sends.
    let later = slot + chrono::Duration::minutes(1);
    neo_ops::triggers::schedule::fire(&server.runtime, "owner-digest", 0, later).await;
    support::wait_until("the scheduled digest is sent", || async {
        mail(&dep).len() == 2
    })
    .await;
    support::wait_until("the digest job is done", || async {
        support::queued_jobs(&server, "digest").await.is_empty()
    })
    .await;
    let covered = server
        .master()
        .query("SELECT covered_until FROM digest_sends", &[])
        .await
        .unwrap();
    // The day's digest, covering the day up to the slot.
    let Value::Timestamp(cut) = covered.rows[0][0] else {
        panic!("{covered:?}");
    };
    assert!((cut - later.timestamp_micros()).abs() < 1000, "{covered:?}");
    assert_eq!(covered.rows.len(), 1);
    let out = digest(&server, &["--tenant", "acme"]).await.unwrap();
    assert!(out.ends_with(": skipped, already sent\n"), "{out}");
    assert_eq!(mail(&dep).len(), 2);
    server.stop().await.unwrap();
}

on_both_backends!(
    sent_by_hand,
    a_digest_sent_by_hand_leaves_the_evenings_to_go
);

/// Without --date, the business day is today in the tenant's zone.
async fn default_day_is_today_in_the_zone(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MANIFEST, "a").await;
    tenant(
        &server,
        "acme",
        Some("owner@acme.example"),
        "Pacific/Kiritimati",
    )
    .await;
    let before = Utc::now()
        .with_timezone(&chrono_tz::Pacific::Kiritimati)
        .date_naive();
    let out = digest(&server, &["--tenant", "acme", "--dry-run", "--json"])
        .await
        .unwrap();
    let after = Utc::now()
        .with_timezone(&chrono_tz::Pacific::Kiritimati)
        .date_naive();
    let json: Json = serde_json::from_str(&out).unwrap();
    let day = json["data"]["results"][0]["business_day"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        [before.to_string(), after.to_string()].contains(&day),
        "{day} is today in UTC+14"
    );
    server.stop().await.unwrap();
}

on_both_backends!(default_day, default_day_is_today_in_the_zone);
