//! The L1 support console end to end, on both backends (SQLite + in-process
//! kv + .eml outbox, and Postgres + Redis + a real SMTP server): the role
//! check on every route, the tenant errors, lookups that never leave the
//! tenant, each action's effect in the database, double clicks doing the work
//! once, and audit records written for successes only, chained and tamper-evident.

use crate::support;

use neo_ops::auth;
use neo_ops::backends::db::{Pool, Value};
use neo_ops::backends::queue::{Job, queue_key};
use neo_ops::manifest::Role;
use serde_json::{Value as Json, json};
use support::{Backend, Deployment, Server};

/// The support console's manifest block for these tests (the web console's test
/// serves it too).
pub const MANIFEST: &str = r#"
[plugins.support-console]
component = "support_console.wasm"
routes = [
    { method = "GET",  path = "/admin/support/console/search", role = "super_admin" },
    { method = "POST", path = "/admin/support/console/order/{order_id}/resend_invoice", role = "super_admin" },
    { method = "POST", path = "/admin/support/console/order/{order_id}/reprint_kot", role = "super_admin" },
    { method = "POST", path = "/admin/support/console/order/{order_id}/replay_webhook", role = "super_admin" },
    { method = "POST", path = "/admin/support/console/staff/{staff_id}/unlock_pin", role = "super_admin" },
]
grants = { db = ["master", "tenant:*"], mail = true, kv = ["console:"], queues = ["webhook"], audit = true }
limits = { memory = "32MiB", timeout = "30s" }
config = { double_click = "30s", idempotency_ttl = "10m" }
"#;

const CONSOLE: &str = "/admin/support/console";

fn forbidden() -> Json {
    json!({"ok": false, "error": {"code": 403, "message": "forbidden"}})
}

fn error(code: u16, message: &str) -> Json {
    json!({"ok": false, "error": {"code": code, "message": message}})
}

/// Everything a step needs: the server, the two tokens, both tenants' pools.
struct Ctx {
    dep: Deployment,
    server: Server,
    root: String,
    admin: String,
    alpha: Pool,
    bravo: Pool,
}

/// A request with optional token, extra headers and body; the reply parsed.
struct Call<'a> {
    method: &'a str,
    path: String,
    token: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a str,
}

impl Ctx {
    fn call(&self, method: &'static str, path: &str) -> Call<'_> {
        Call {
            method,
            path: format!("{CONSOLE}{path}"),
            token: Some(&self.root),
            headers: Vec::new(),
            body: "",
        }
    }

    async fn send(&self, c: Call<'_>) -> (u16, Json) {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
        let mut req = self
            .server
            .http
            .request(method, self.server.url(&c.path))
            .body(c.body.to_string());
        if let Some(t) = c.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in c.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} {}: not JSON ({e}): {text}", c.method, c.path));
        (status, body)
    }

    /// A POST as super_admin with no extra headers.
    async fn post(&self, path: &str) -> (u16, Json) {
        self.send(self.call("POST", path)).await
    }

    async fn get(&self, path: &str) -> (u16, Json) {
        self.send(self.call("GET", path)).await
    }

    fn master(&self) -> &Pool {
        self.server.master()
    }

    async fn audit_rows(&self) -> i64 {
        support::ints(self.master(), "SELECT COUNT(*) FROM audit_log", &[]).await[0]
    }

    /// The details of the latest audit record of `action`.
    async fn last_details(&self, action: &str) -> Json {
        let set = self
            .master()
            .query(
                "SELECT details FROM audit_log WHERE action = $1 ORDER BY id DESC LIMIT 1",
                &[Value::Text(action.into())],
            )
            .await
            .unwrap();
        match &set.rows[0][0] {
            Value::Text(s) | Value::Json(s) => serde_json::from_str(s).unwrap(),
            other => panic!("details: {other:?}"),
        }
    }

    fn mails(&self) -> Vec<String> {
        self.dep.sent_mail()
    }

    /// Jobs waiting on the "webhook" queue (nothing consumes it in this test).
    async fn webhook_jobs(&self) -> Vec<Job> {
        self.server
            .services
            .kv
            .list_range(&queue_key("webhook"), 0, -1)
            .await
            .unwrap()
            .iter()
            .map(|raw| serde_json::from_slice(raw).unwrap())
            .collect()
    }
}

async fn int(pool: &Pool, sql: &str, id: i64) -> i64 {
    support::ints(pool, sql, &[Value::Int(id)]).await[0]
}

async fn text(pool: &Pool, sql: &str, params: &[Value]) -> Option<String> {
    let set = pool.query(sql, params).await.unwrap();
    match set.rows.first().map(|r| &r[0]) {
        Some(Value::Text(s) | Value::Json(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => panic!("expected text, got {other:?}"),
    }
}

// ---- seed data ---------------------------------------------------------------

/// Both tenants use the same ids and table code T1; tenant "bravo" also has
/// table B7, order 3 and staff 2, which "alpha" does not.
async fn seed(alpha: &Pool, bravo: &Pool) {
    let now = Value::Timestamp(chrono::Utc::now().timestamp_micros());
    let t = |s: &str| Value::Text(s.to_string());
    let i = Value::Int;
    let run = |pool: &Pool, rows: Vec<(&'static str, Vec<Value>)>| {
        let pool = pool.clone();
        async move {
            for (sql, params) in rows {
                pool.execute(sql, &params)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    };
    const TABLE: &str = "INSERT INTO dining_tables (id, code) VALUES ($1, $2)";
    const CUSTOMER: &str = "INSERT INTO customers (id, name, email) VALUES ($1, $2, $3)";
    const STAFF: &str = "INSERT INTO staff (id, name, pin_failed_attempts, pin_locked_at) \
                         VALUES ($1, $2, $3, $4)";
    const ORDER: &str =
        "INSERT INTO orders (id, table_id, customer_id, status) VALUES ($1, $2, $3, $4)";
    const INVOICE: &str =
        "INSERT INTO invoices (id, order_id, number, amount_minor) VALUES ($1, $2, $3, $4)";
    const KOT: &str = "INSERT INTO kots (id, order_id, printed_at) VALUES ($1, $2, $3)";
    const ENDPOINT: &str = "INSERT INTO webhook_endpoints (id, url, secret) VALUES ($1, $2, $3)";
    const DELIVERY: &str = "INSERT INTO webhook_deliveries (id, endpoint_id, order_id, event, status, attempts) \
                            VALUES ($1, $2, $3, $4, $5, $6)";
    let shared = |tag: &str| {
        vec![
            (TABLE, vec![i(1), t("A1")]),
            (TABLE, vec![i(2), t("T1")]),
            (
                CUSTOMER,
                vec![i(1), t("Asha Rao"), t(&format!("asha@{tag}.example"))],
            ),
            (CUSTOMER, vec![i(2), t("Ravi Das"), t("not-an-address")]),
            (STAFF, vec![i(1), t("Manoj"), i(5), now.clone()]),
            (ORDER, vec![i(1), i(2), i(1), t("READY")]),
            (ORDER, vec![i(2), Value::Null, i(2), t("PAID")]),
            (
                INVOICE,
                vec![i(1), i(1), t(&format!("INV-{tag}-0001")), i(45_000)],
            ),
            (
                INVOICE,
                vec![i(2), i(2), t(&format!("INV-{tag}-0002")), i(12_000)],
            ),
            (KOT, vec![i(1), i(1), now.clone()]),
            (
                ENDPOINT,
                vec![
                    i(1),
                    t(&format!("https://hooks.{tag}.example/pos")),
                    t("whsec_x"),
                ],
            ),
            (
                DELIVERY,
                vec![i(1), i(1), i(1), t("order.ready"), t("delivered"), i(1)],
            ),
        ]
    };
    run(alpha, shared("ALPHA")).await;
    let mut only_bravo = shared("BRAVO");
    only_bravo.extend([
        (TABLE, vec![i(3), t("B7")]),
        (
            CUSTOMER,
            vec![i(3), t("Bela Nair"), t("bela@bravo.example")],
        ),
        (STAFF, vec![i(2), t("Zoya"), i(5), now.clone()]),
        (ORDER, vec![i(3), i(3), i(3), t("SERVED")]),
        (INVOICE, vec![i(3), i(3), t("INV-BRAVO-0003"), i(123_456)]),
        (KOT, vec![i(2), i(3), now.clone()]),
        (KOT, vec![i(3), i(3), now.clone()]),
        (
            DELIVERY,
            vec![i(2), i(1), i(3), t("order.paid"), t("failed"), i(5)],
        ),
        (
            DELIVERY,
            vec![i(3), i(1), i(3), t("order.served"), t("dead"), i(8)],
        ),
    ]);
    run(bravo, only_bravo).await;
}

// ---- the test ----------------------------------------------------------------

async fn console_end_to_end(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(MANIFEST, "a").await;
    let master = server.master().clone();
    let root = auth::create_token(&master, Role::SuperAdmin, "oncall")
        .await
        .unwrap();
    let admin = auth::create_token(&master, Role::Admin, "support")
        .await
        .unwrap();
    let db = &server.services.db;
    db.create_tenant("alpha", "Alpha Diner").await.unwrap();
    db.create_tenant("bravo", "Bravo Bistro").await.unwrap();
    let (alpha, bravo) = (
        db.tenant("alpha").await.unwrap(),
        db.tenant("bravo").await.unwrap(),
    );
    seed(&alpha, &bravo).await;
    let ctx = Ctx {
        dep,
        server,
        root,
        admin,
        alpha,
        bravo,
    };

    every_route_needs_super_admin(&ctx).await;
    tenant_is_required_and_must_exist(&ctx).await;
    search_stays_in_its_tenant(&ctx).await;
    actions_never_reach_another_tenant(&ctx).await;
    resend_invoice_mails_once(&ctx).await;
    failed_mail_is_not_audited_and_can_be_retried(&ctx).await;
    reprint_kot_once_per_click(&ctx).await;
    replay_webhook_enqueues_once(&ctx).await;
    unlock_pin_with_tenant_in_body(&ctx).await;
    audit_records_who_and_chain_catches_edits(&ctx).await;

    let Ctx { server, .. } = ctx;
    server.stop().await.unwrap();
}

on_both_backends!(console, console_end_to_end);

/// Each route with no token and with an `admin` token: the host's exact 403,
/// the plugin never runs (no audit, nothing changed). Each route's
/// super_admin success is shown by the steps below.
async fn every_route_needs_super_admin(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    let routes = [
        ("GET", "/search?tenant=bravo&table=T1&order=3"),
        ("POST", "/order/3/resend_invoice?tenant=bravo"),
        ("POST", "/order/3/reprint_kot?tenant=bravo"),
        ("POST", "/order/3/replay_webhook?tenant=bravo"),
        ("POST", "/staff/2/unlock_pin?tenant=bravo"),
    ];
    for (method, path) in routes {
        for token in [None, Some(ctx.admin.as_str())] {
            let mut call = ctx.call(method, path);
            call.token = token;
            let (status, body) = ctx.send(call).await;
            assert_eq!(
                (status, body),
                (403, forbidden()),
                "{method} {path} token={token:?}"
            );
        }
    }
    assert_eq!(ctx.audit_rows().await, before);
    assert!(ctx.mails().is_empty());
    assert_eq!(
        int(
            &ctx.bravo,
            "SELECT pin_failed_attempts FROM staff WHERE id = $1",
            2
        )
        .await,
        5
    );
}

async fn tenant_is_required_and_must_exist(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    let paths = [
        ("GET", "/search?table=T1"),
        ("POST", "/order/1/resend_invoice"),
        ("POST", "/order/1/reprint_kot"),
        ("POST", "/order/1/replay_webhook"),
        ("POST", "/staff/1/unlock_pin"),
    ];
    for (method, path) in paths {
        let (status, body) = ctx.send(ctx.call(method, path)).await;
        assert_eq!(
            (status, body),
            (400, error(400, "tenant is required")),
            "{path}"
        );
        let sep = if path.contains('?') { '&' } else { '?' };
        for unknown in ["nope", "999"] {
            let path = format!("{path}{sep}tenant={unknown}");
            let (status, body) = ctx.send(ctx.call(method, &path)).await;
            assert_eq!(
                (status, body),
                (404, error(404, "tenant not found")),
                "{path}"
            );
        }
    }
    // An unknown tenant in the body is the same 404.
    let mut call = ctx.call("POST", "/staff/1/unlock_pin");
    call.body = r#"{"tenant": "nope"}"#;
    assert_eq!(ctx.send(call).await, (404, error(404, "tenant not found")));
    assert_eq!(ctx.audit_rows().await, before, "failures are not audited");
}

async fn search_stays_in_its_tenant(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    // The spec's example, by tenant name.
    let (status, body) = ctx.get("/search?tenant=alpha&table=T1&order=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "data": {
            "tenant": {"id": "1", "name": "alpha"},
            "table": {"id": "2", "code": "T1"},
            "order": {"id": 1, "status": "READY"},
        }})
    );
    // Table B7 and order 3 exist only in bravo: alpha finds nothing.
    let (status, body) = ctx.get("/search?tenant=alpha&table=B7&order=3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "data": {
            "tenant": {"id": "1", "name": "alpha"}, "table": null, "order": null,
        }})
    );
    // Bravo by its numeric id finds them; what was not asked for is null.
    let (_, body) = ctx.get("/search?tenant=2&table=B7&order=3").await;
    assert_eq!(
        body["data"],
        json!({
            "tenant": {"id": "2", "name": "bravo"},
            "table": {"id": "3", "code": "B7"},
            "order": {"id": 3, "status": "SERVED"},
        })
    );
    let (_, body) = ctx.get("/search?tenant=bravo&order=3").await;
    assert_eq!(body["data"]["table"], Json::Null);
    let (_, body) = ctx.get("/search?tenant=bravo&table=T1").await;
    assert_eq!(body["data"]["order"], Json::Null);
    // A malformed order id is a 400, not a silent miss.
    let (status, body) = ctx.get("/search?tenant=bravo&order=abc").await;
    assert_eq!(
        (status, body),
        (400, error(400, "order \"abc\" is not an order id"))
    );
    // Each successful search is one audit record.
    assert_eq!(ctx.audit_rows().await, before + 5);
    let details = text(
        ctx.master(),
        "SELECT details FROM audit_log WHERE action = 'console.search' AND tenant = 'alpha' \
         ORDER BY id DESC LIMIT 1",
        &[],
    )
    .await
    .unwrap();
    let details: Json = serde_json::from_str(&details).unwrap();
    assert_eq!(
        details,
        json!({"table": "B7", "order": 3, "table_found": false, "order_found": false})
    );
}

/// Order 3 and staff 2 exist only in bravo: via alpha every action is a 404
/// and bravo is untouched.
async fn actions_never_reach_another_tenant(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    for action in ["resend_invoice", "reprint_kot", "replay_webhook"] {
        let (status, body) = ctx.post(&format!("/order/3/{action}?tenant=alpha")).await;
        assert_eq!(
            (status, body),
            (404, error(404, "order 3 not found")),
            "{action}"
        );
    }
    let (status, body) = ctx.post("/staff/2/unlock_pin?tenant=alpha").await;
    assert_eq!((status, body), (404, error(404, "staff 2 not found")));
    let b = &ctx.bravo;
    assert_eq!(
        int(
            b,
            "SELECT COUNT(*) FROM invoices WHERE order_id = $1 AND emailed_at IS NOT NULL",
            3
        )
        .await,
        0
    );
    assert_eq!(
        int(
            b,
            "SELECT SUM(reprint_count) FROM kots WHERE order_id = $1",
            3
        )
        .await,
        0
    );
    assert_eq!(
        int(
            b,
            "SELECT COUNT(*) FROM webhook_deliveries WHERE order_id = $1 AND status = 'pending'",
            3
        )
        .await,
        0
    );
    assert_eq!(
        int(b, "SELECT pin_failed_attempts FROM staff WHERE id = $1", 2).await,
        5
    );
    assert!(ctx.mails().is_empty());
    assert!(ctx.webhook_jobs().await.is_empty());
    assert_eq!(ctx.audit_rows().await, before);
}

const REQUEST_ID: &str = "req-console-resend-1";

async fn resend_invoice_mails_once(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    let path = "/order/3/resend_invoice?tenant=bravo";
    let mut call = ctx.call("POST", path);
    call.headers.push(("x-request-id", REQUEST_ID));
    let (status, body) = ctx.send(call).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(body["ok"], true);
    assert_eq!(data["tenant"], json!({"id": "2", "name": "bravo"}));
    assert_eq!(
        (&data["action"], &data["order"], &data["duplicate"]),
        (&json!("resend_invoice"), &json!({"id": 3}), &json!(false))
    );
    assert_eq!(data["invoice"]["number"], "INV-BRAVO-0003");
    assert_eq!(data["sent_to"], "bela@bravo.example");

    let mails = ctx.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert!(mail.contains("To: bela@bravo.example"), "{mail}");
    assert!(
        mail.contains("Subject: Your invoice INV-BRAVO-0003 from Bravo Bistro"),
        "{mail}"
    );
    assert!(mail.contains("Invoice: INV-BRAVO-0003"), "{mail}");
    assert!(mail.contains("Amount:  1234.56"), "{mail}");
    let emailed = "SELECT COUNT(*) FROM invoices WHERE order_id = $1 AND emailed_at IS NOT NULL";
    assert_eq!(int(&ctx.bravo, emailed, 3).await, 1);
    assert_eq!(int(&ctx.alpha, emailed, 3).await, 0);
    assert_eq!(ctx.audit_rows().await, before + 1);

    // A double click without a key: 200, duplicate, no second mail, no audit.
    let (status, body) = ctx.post(path).await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"ok": true, "data": {
                "tenant": {"id": "2", "name": "bravo"}, "action": "resend_invoice",
                "order": {"id": 3}, "duplicate": true,
            }})
        )
    );
    assert_eq!(ctx.mails().len(), 1);
    assert_eq!(ctx.audit_rows().await, before + 1);

    // With an Idempotency-Key: a new request runs once, its repeat does nothing.
    for expect_duplicate in [false, true] {
        let mut call = ctx.call("POST", path);
        call.headers.push(("Idempotency-Key", "resend-7f3a"));
        let (status, body) = ctx.send(call).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["duplicate"], expect_duplicate);
    }
    assert_eq!(ctx.mails().len(), 2);
    assert_eq!(ctx.audit_rows().await, before + 2);

    // The customer is anonymised meanwhile: the repeat is still told the
    // invoice went (not 409 "no customer email"), and nothing more is sent.
    let customer = "UPDATE customers SET email = $1 \
                    WHERE id = (SELECT customer_id FROM orders WHERE id = 3)";
    ctx.bravo.execute(customer, &[Value::Null]).await.unwrap();
    let mut call = ctx.call("POST", path);
    call.headers.push(("Idempotency-Key", "resend-7f3a"));
    let (status, body) = ctx.send(call).await;
    assert_eq!(
        (status, &body["data"]["duplicate"]),
        (200, &json!(true)),
        "{body}"
    );
    let restored = [Value::Text("bela@bravo.example".into())];
    ctx.bravo.execute(customer, &restored).await.unwrap();
    assert_eq!(ctx.mails().len(), 2);
    assert_eq!(ctx.audit_rows().await, before + 2);
}

/// Order 2's customer has an address the mailer refuses: a 400, no audit,
/// `emailed_at` stays empty, and the guard is released so a retry once the
/// address is fixed goes through at once.
async fn failed_mail_is_not_audited_and_can_be_retried(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    let mails = ctx.mails().len();
    let path = "/order/2/resend_invoice?tenant=bravo";
    let (status, body) = ctx.post(path).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["ok"], false);
    assert_eq!(body["error"]["code"], 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("bad address \"not-an-address\""),
        "{message}"
    );
    let emailed = "SELECT COUNT(*) FROM invoices WHERE order_id = $1 AND emailed_at IS NOT NULL";
    assert_eq!(int(&ctx.bravo, emailed, 2).await, 0);
    assert_eq!(ctx.audit_rows().await, before);
    assert_eq!(ctx.mails().len(), mails);

    ctx.bravo
        .execute(
            "UPDATE customers SET email = 'ravi@bravo.example' WHERE id = $1",
            &[Value::Int(2)],
        )
        .await
        .unwrap();
    let (status, body) = ctx.post(path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["duplicate"], false);
    assert_eq!(int(&ctx.bravo, emailed, 2).await, 1);
    assert_eq!(ctx.audit_rows().await, before + 1);
    let mails = ctx.mails();
    let last = mails.iter().find(|m| m.contains("INV-BRAVO-0002")).unwrap();
    assert!(last.contains("To: ravi@bravo.example"), "{last}");
}

async fn reprint_kot_once_per_click(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    let reprints = |order: i64| async move {
        let sql = "SELECT reprint_count FROM kots WHERE order_id = $1 ORDER BY id";
        support::ints(&ctx.bravo, sql, &[Value::Int(order)]).await
    };
    let requested =
        "SELECT COUNT(*) FROM kots WHERE order_id = $1 AND reprint_requested_at IS NOT NULL";
    let path = "/order/3/reprint_kot?tenant=bravo";
    // The same Idempotency-Key twice: both KOTs reprinted once.
    for expect_duplicate in [false, true] {
        let mut call = ctx.call("POST", path);
        call.headers.push(("Idempotency-Key", "kot-1"));
        let (status, body) = ctx.send(call).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["duplicate"], expect_duplicate, "{body}");
        if !expect_duplicate {
            assert_eq!(body["data"]["kots"], 2);
        }
    }
    assert_eq!(reprints(3).await, [1, 1]);
    assert_eq!(int(&ctx.bravo, requested, 3).await, 2);
    assert_eq!(ctx.audit_rows().await, before + 1);
    // The record went in with the change (one host call): it names the
    // KOTs it marked.
    let details = ctx.last_details("console.reprint_kot").await;
    assert_eq!(details, json!({"rows": [2]}));
    // Twice without a key: a double click, one more reprint per KOT.
    for expect_duplicate in [false, true] {
        let (status, body) = ctx.post(path).await;
        assert_eq!(
            (status, &body["data"]["duplicate"]),
            (200, &json!(expect_duplicate))
        );
    }
    assert_eq!(reprints(3).await, [2, 2]);
    assert_eq!(ctx.audit_rows().await, before + 2);
    // Two clicks at the same instant with one key: exactly one does the work.
    let click = || {
        let mut call = ctx.call("POST", path);
        call.headers.push(("Idempotency-Key", "kot-race"));
        ctx.send(call)
    };
    let (a, b) = tokio::join!(click(), click());
    let (done, other) = if a.1["data"]["duplicate"] == json!(false) {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!((done.0, &done.1["data"]["duplicate"]), (200, &json!(false)));
    // The other found the work done, or still running.
    assert!(
        (other.0 == 200 && other.1["data"]["duplicate"] == json!(true)) || other.0 == 409,
        "{other:?}"
    );
    assert_eq!(reprints(3).await, [3, 3]);
    assert_eq!(ctx.audit_rows().await, before + 3);
    // While another call holds the guard and has not finished, a repeat is
    // told so (409), not that the work was done; nothing runs.
    let busy = "console:idem:bravo:reprint_kot:order:3:kot-busy";
    let kv = &ctx.server.services.kv;
    let token = kv
        .lock(busy, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let mut call = ctx.call("POST", path);
    call.headers.push(("Idempotency-Key", "kot-busy"));
    assert_eq!(
        ctx.send(call).await,
        (
            409,
            error(
                409,
                "reprint_kot on order:3 is already running; check its outcome before trying again"
            )
        )
    );
    assert!(kv.unlock(busy, &token).await.unwrap());
    assert_eq!(reprints(3).await, [3, 3]);
    assert_eq!(ctx.audit_rows().await, before + 3);
    // A call under another key while one is running on the same order (a
    // console reloaded during a slow send): told it is running, not run.
    let clicks = "console:click:bravo:reprint_kot:order:3";
    // The no-key double clicks above left their lock and done mark for the
    // window: cleared, as if that window had passed.
    let host_lock = format!("{}lock:{clicks}", neo_ops::manifest::HOST_NAMESPACE);
    kv.delete(&host_lock).await.unwrap();
    kv.delete(&format!("console:done:{clicks}")).await.unwrap();
    let token = kv
        .lock(clicks, std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let other_key = || {
        let mut call = ctx.call("POST", path);
        call.headers.push(("Idempotency-Key", "kot-after-reload"));
        ctx.send(call)
    };
    assert_eq!(
        other_key().await,
        (
            409,
            error(
                409,
                "reprint_kot on order:3 is already running; check its outcome before trying again"
            )
        )
    );
    assert_eq!(reprints(3).await, [3, 3]);
    // Once it is over, that key's call runs (and leaves the order free).
    assert!(kv.unlock(clicks, &token).await.unwrap());
    let (status, body) = other_key().await;
    assert_eq!((status, &body["data"]["duplicate"]), (200, &json!(false)));
    assert_eq!(reprints(3).await, [4, 4]);
    let free = kv
        .lock(clicks, std::time::Duration::from_secs(1))
        .await
        .unwrap();
    assert!(free.is_some(), "the call left the order free");
    assert_eq!(ctx.audit_rows().await, before + 4);
    // Alpha's order 1 KOT (same id space) is untouched.
    assert_eq!(
        int(
            &ctx.alpha,
            "SELECT reprint_count FROM kots WHERE id = $1",
            1
        )
        .await,
        0
    );
    // An order without KOTs (bravo's order 2) is a 404 with no audit.
    assert_eq!(
        ctx.post("/order/2/reprint_kot?tenant=bravo").await,
        (404, error(404, "order 2 has no kitchen order tickets"))
    );
    assert_eq!(ctx.audit_rows().await, before + 4);
}

async fn replay_webhook_enqueues_once(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    let pending =
        "SELECT COUNT(*) FROM webhook_deliveries WHERE order_id = $1 AND status = 'pending'";
    // The tenant given by id: the jobs still carry its name, which is what
    // the consumer opens the database by.
    let path = "/order/3/replay_webhook?tenant=2";
    let (status, body) = ctx.post(path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["deliveries"], json!([2, 3]));
    assert_eq!(body["data"]["jobs"], 2);
    assert_eq!(int(&ctx.bravo, pending, 3).await, 2);
    assert_eq!(
        int(&ctx.bravo, pending, 1).await,
        0,
        "other orders untouched"
    );
    assert_eq!(int(&ctx.alpha, pending, 1).await, 0);

    let check_jobs = |jobs: Vec<Job>| {
        let mut seen: Vec<(Json, Option<String>)> = jobs
            .into_iter()
            .map(|j| {
                assert_eq!(j.queue, "webhook");
                (serde_json::from_str(&j.payload).unwrap(), j.tenant)
            })
            .collect();
        seen.sort_by_key(|(p, _)| p["delivery_id"].as_i64());
        assert_eq!(
            seen,
            vec![
                (json!({"delivery_id": 2}), Some("bravo".to_string())),
                (json!({"delivery_id": 3}), Some("bravo".to_string())),
            ]
        );
    };
    check_jobs(ctx.webhook_jobs().await);
    assert_eq!(ctx.audit_rows().await, before + 1);

    let (status, body) = ctx.post(path).await;
    assert_eq!((status, &body["data"]["duplicate"]), (200, &json!(true)));
    check_jobs(ctx.webhook_jobs().await);
    assert_eq!(ctx.audit_rows().await, before + 1);
}

/// The tenant may come in a JSON body instead of the query.
async fn unlock_pin_with_tenant_in_body(ctx: &Ctx) {
    let before = ctx.audit_rows().await;
    let locked = "SELECT COUNT(*) FROM staff WHERE id = $1 \
                  AND (pin_locked_at IS NOT NULL OR pin_failed_attempts <> 0)";
    for expect_duplicate in [false, true] {
        let mut call = ctx.call("POST", "/staff/2/unlock_pin");
        call.body = r#"{"tenant": "bravo"}"#;
        let (status, body) = ctx.send(call).await;
        assert_eq!(status, 200, "{body}");
        let mut expected = json!({
            "tenant": {"id": "2", "name": "bravo"}, "action": "unlock_pin",
            "staff": {"id": 2}, "duplicate": expect_duplicate,
        });
        if !expect_duplicate {
            expected["was_locked"] = json!(true);
            expected["failed_attempts_cleared"] = json!(5);
        }
        assert_eq!(body, json!({"ok": true, "data": expected}));
    }
    assert_eq!(int(&ctx.bravo, locked, 2).await, 0);
    assert_eq!(int(&ctx.bravo, locked, 1).await, 1, "staff 1 untouched");
    assert_eq!(int(&ctx.alpha, locked, 1).await, 1, "alpha untouched");
    assert_eq!(ctx.audit_rows().await, before + 1);
    // Query and body naming different tenants is refused, not guessed.
    let mut call = ctx.call("POST", "/staff/1/unlock_pin?tenant=alpha");
    call.body = r#"{"tenant": "bravo"}"#;
    assert_eq!(
        ctx.send(call).await,
        (
            400,
            error(
                400,
                "ambiguous tenant: \"alpha\" in the query and \"bravo\" in the body differ; give it once"
            )
        )
    );
    assert_eq!(ctx.audit_rows().await, before + 1);
}

async fn audit_records_who_and_chain_catches_edits(ctx: &Ctx) {
    let master = ctx.master();
    let set = master
        .query(
            "SELECT actor, action, target, tenant, plugin, details FROM audit_log \
             WHERE request_id = $1",
            &[Value::Text(REQUEST_ID.into())],
        )
        .await
        .unwrap();
    assert_eq!(set.rows.len(), 1, "one record for the one request");
    let cols: Vec<String> = set.rows[0]
        .iter()
        .map(|v| match v {
            Value::Text(s) | Value::Json(s) => s.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        cols[..5],
        [
            "oncall",
            "console.resend_invoice",
            "order:3",
            "bravo",
            "support-console"
        ]
    );
    let details: Json = serde_json::from_str(&cols[5]).unwrap();
    assert_eq!(details["invoice"], "INV-BRAVO-0003");
    assert_eq!(details["customer_id"], 3);
    assert!(
        !cols[5].contains("bela@"),
        "no customer address in the audit log: {details}"
    );
    // Every successful action and search was audited, all by the token's name.
    let expected: [(&str, i64); 5] = [
        ("console.search", 5),
        ("console.resend_invoice", 3),
        ("console.reprint_kot", 4),
        ("console.replay_webhook", 1),
        ("console.unlock_pin", 1),
    ];
    for (action, n) in expected {
        let count = support::ints(
            master,
            "SELECT COUNT(*) FROM audit_log WHERE action = $1 AND actor = 'oncall' \
             AND request_id IS NOT NULL AND plugin = 'support-console'",
            &[Value::Text(action.into())],
        )
        .await[0];
        assert_eq!(count, n, "{action}");
    }
    let total = ctx.audit_rows().await;
    assert_eq!(total, 14);

    let v = neo_ops::audit_log::verify(master).await.unwrap();
    assert_eq!((v.records, v.broken_at.as_ref()), (14, None));
    let ids = support::ints(master, "SELECT id FROM audit_log ORDER BY id", &[]).await;
    // A forged actor on the last record is caught...
    master
        .execute(
            "UPDATE audit_log SET actor = 'mallory' WHERE id = $1",
            &[Value::Int(ids[12])],
        )
        .await
        .unwrap();
    let v = neo_ops::audit_log::verify(master).await.unwrap();
    assert_eq!(v.records, 12);
    assert_eq!(
        v.broken_at,
        Some((ids[12], "contents do not match its hash".to_string()))
    );
    // ...and so is an edited details object further back.
    master
        .execute(
            "UPDATE audit_log SET details = '{\"invoice\": \"INV-FORGED\"}' WHERE id = $1",
            &[Value::Int(ids[5])],
        )
        .await
        .unwrap();
    let v = neo_ops::audit_log::verify(master).await.unwrap();
    assert_eq!(v.records, 5);
    assert_eq!(
        v.broken_at,
        Some((ids[5], "contents do not match its hash".to_string()))
    );
}
