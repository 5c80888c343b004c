//! Webhooks, export jobs and the dead-letter admin end to end, on both
//! backends: a webhook to a failing receiver is retried `max_attempts` times
//! with valid signatures, lands in the dead letters with its error, is
//! replayed (audited) after the receiver recovers and is delivered exactly
//! once; the circuit breaker opens, stops sending, and closes after a trial;
//! an export job mails a CSV, and a bad one is dead-lettered.

use crate::support;

use neo_ops::backends::db::{Pool, Value};
use neo_ops::backends::queue;
use neo_ops::manifest::Role;
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use support::{Backend, Deployment, HttpReceiver, Server, wait_until};

use support::FORBIDDEN;
/// A Standard Webhooks secret: `whsec_` + base64 of the key.
const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtMDEyMzQ1Njc4OQ==";
const MAX_ATTEMPTS: usize = 3;

/// The three plugins, granted the receiver's exact origin.
fn manifest(receiver: &HttpReceiver, breaker_threshold: u32, breaker_cooldown: &str) -> String {
    format!(
        r#"
[plugins.webhook-dispatch]
component = "webhook_dispatch.wasm"
queue = {{ name = "webhook", max_attempts = {MAX_ATTEMPTS}, concurrency = 4 }}
grants = {{ db = ["tenant"], kv = ["webhook:"], http = ["http://{addr}"], audit = true }}
limits = {{ memory = "32MiB", timeout = "15s" }}
config = {{ breaker_threshold = "{breaker_threshold}", breaker_cooldown = "{breaker_cooldown}", request_timeout = "5s" }}

[plugins.export-jobs]
component = "export_jobs.wasm"
queue = {{ name = "export", max_attempts = 2 }}
grants = {{ db = ["master", "tenant"], kv = ["export:"], mail = true }}
limits = {{ memory = "64MiB", timeout = "60s" }}

[plugins.dead-letters]
component = "dead_letters.wasm"
routes = [
  {{ method = "GET", path = "/api/admin/dlq", role = "admin" }},
  {{ method = "POST", path = "/api/admin/dlq/replay", role = "admin" }},
]
grants = {{ queues = ["webhook", "export"], audit = true }}
limits = {{ memory = "16MiB" }}
"#,
        addr = receiver.addr
    )
}

// ---- helpers --------------------------------------------------------------------

/// HMAC-SHA256 (RFC 2104) as lowercase hex, computed independently of the plugin.
fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|k| k ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    hex::encode(outer)
}

#[test]
fn hmac_matches_rfc_4231_case_2() {
    assert_eq!(
        hmac_sha256_hex(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

async fn create_tenant(server: &Server, name: &str) -> Pool {
    server
        .services
        .db
        .create_tenant(name, &format!("{name} kitchen"))
        .await
        .unwrap();
    server.services.db.tenant(name).await.unwrap()
}

/// Creates tenant `name` with one endpoint (id 1) posting to the receiver.
async fn tenant_with_endpoint(server: &Server, name: &str, receiver: &HttpReceiver) -> Pool {
    let pool = create_tenant(server, name).await;
    pool.execute(
        "INSERT INTO webhook_endpoints (id, url, secret) VALUES (1, $1, $2)",
        &[
            // The query string stands for a credential: it must never be logged.
            Value::Text(receiver.url("/hooks/in?token=sekrit")),
            Value::Text(SECRET.into()),
        ],
    )
    .await
    .unwrap();
    pool
}

async fn add_delivery(pool: &Pool, id: i64, payload: &Json) {
    pool.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, event, payload) \
         VALUES ($1, 1, 'order.paid', $2)",
        &[Value::Int(id), Value::Json(payload.to_string())],
    )
    .await
    .unwrap();
}

/// Endpoint 1 is switched off.
async fn endpoint_1_is_off(pool: &Pool) {
    let active = pool
        .query("SELECT active FROM webhook_endpoints WHERE id = 1", &[])
        .await
        .unwrap();
    assert!(
        matches!(active.rows[0][0], Value::Bool(false) | Value::Int(0)),
        "{active:?}"
    );
}

/// (status, attempts, last_error) of a delivery.
async fn delivery(pool: &Pool, id: i64) -> (String, i64, Option<String>) {
    let rows = pool
        .query(
            "SELECT status, attempts, last_error FROM webhook_deliveries WHERE id = $1",
            &[Value::Int(id)],
        )
        .await
        .unwrap();
    let row = &rows.rows[0];
    let text = |v: &Value| match v {
        Value::Text(s) => Some(s.clone()),
        _ => None,
    };
    let Value::Int(attempts) = row[1] else {
        panic!("attempts: {:?}", row[1])
    };
    (text(&row[0]).unwrap(), attempts, text(&row[2]))
}

async fn enqueue(server: &Server, name: &str, tenant: &str, payload: &str) -> String {
    queue::enqueue(&server.services.kv, name, Some(tenant), payload)
        .await
        .unwrap()
}

async fn get_json(server: &Server, path: &str, token: &str) -> (u16, Json) {
    let (code, body) = server.get(path, Some(token)).await;
    (
        code,
        serde_json::from_str(&body).unwrap_or(Json::String(body)),
    )
}

async fn post_json(server: &Server, path: &str, token: &str, body: &str) -> (u16, Json) {
    let (code, body) = server.post(path, Some(token), body).await;
    (
        code,
        serde_json::from_str(&body).unwrap_or(Json::String(body)),
    )
}

async fn dead_letters(server: &Server, token: &str, kind: &str) -> Vec<Json> {
    let (code, body) = get_json(server, &format!("/api/admin/dlq?type={kind}"), token).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"]["type"], kind);
    body["data"]["dead_letters"].as_array().unwrap().clone()
}

fn header<'a>(req: &'a support::receivers::ReceivedRequest, name: &str) -> &'a str {
    req.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {:?}", req.headers))
}

/// Checks a received webhook: route, headers and a signature over its body.
fn assert_signed(req: &support::receivers::ReceivedRequest, tenant: &str, delivery_id: i64) {
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/in?token=sekrit");
    assert_eq!(header(req, "content-type"), "application/json");
    assert_eq!(header(req, "x-neo-event"), "order.paid");
    assert_eq!(header(req, "x-neo-delivery"), delivery_id.to_string());
    let ts = header(req, "x-neo-timestamp");
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp {ts} is recent");
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(&req.body);
    let want = format!("sha256={}", hmac_sha256_hex(SECRET.as_bytes(), &signed));
    assert_eq!(header(req, "x-neo-signature"), want);
    assert_eq!(
        header(req, "webhook-id"),
        format!("msg_{tenant}_{delivery_id}")
    );
    assert_eq!(header(req, "webhook-timestamp"), ts);
    assert!(header(req, "webhook-signature").starts_with("v1,"));
}

/// Verifies a real delivery with the `standardwebhooks` Python library (as
/// an integrator's receiver would), and that it rejects the same delivery
/// with a tampered body or a stale timestamp.
fn verify_with_standard_webhooks(req: &support::receivers::ReceivedRequest) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let headers = dir.path().join("headers.json");
    std::fs::write(&body, &req.body).unwrap();
    let map: serde_json::Map<String, Json> = req
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("webhook-"))
        .map(|(k, v)| (k.clone(), Json::String(v.clone())))
        .collect();
    std::fs::write(&headers, Json::Object(map).to_string()).unwrap();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
secret, body_path, headers_path = sys.argv[1:]
body = open(body_path, "rb").read()
headers = json.load(open(headers_path))
wh = Webhook(secret)
out = {}
try:
    wh.verify(body, headers)
    out["genuine"] = "ok"
except Exception as e:
    out["genuine"] = repr(e)
for case, data, hdrs in [
    ("tampered", body + b" ", headers),
    ("stale", body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)}),
]:
    try:
        wh.verify(data, hdrs)
        out[case] = "accepted"
    except WebhookVerificationError:
        out[case] = "rejected"
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, SECRET])
        .arg(&body)
        .arg(&headers)
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pip install standardwebhooks (.ci/run does): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict: Json = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        verdict,
        serde_json::json!({"genuine": "ok", "tampered": "rejected", "stale": "rejected"})
    );
}

fn requests_for(
    receiver: &HttpReceiver,
    delivery_id: i64,
) -> Vec<support::receivers::ReceivedRequest> {
    receiver
        .requests()
        .into_iter()
        .filter(|r| header(r, "x-neo-delivery") == delivery_id.to_string())
        .collect()
}

// ---- webhook: dead letter, replay, exactly once ------------------------------------

async fn failing_webhook_is_dead_lettered_then_replayed_once(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let receiver = HttpReceiver::start().await;
    receiver.set_status(500);
    // A threshold above max_attempts: every attempt reaches the receiver.
    let server = dep.start(&manifest(&receiver, 10, "60s"), "a").await;
    let pool = tenant_with_endpoint(&server, "acme", &receiver).await;
    let payload = json!({"order_id": 42, "total_minor": 123_450, "note": "extra \"spicy\""});
    add_delivery(&pool, 1, &payload).await;
    let token = neo_ops::auth::create_token(server.master(), Role::Admin, "support")
        .await
        .unwrap();

    let job = enqueue(&server, "webhook", "acme", r#"{"delivery_id": 1}"#).await;
    wait_until("the job is dead-lettered", || async {
        !dead_letters(&server, &token, "webhook").await.is_empty()
    })
    .await;

    // Retried max_attempts times, each signed, each with the stored payload.
    let failed = receiver.requests();
    assert_eq!(failed.len(), MAX_ATTEMPTS, "one request per attempt");
    for req in &failed {
        assert_signed(req, "acme", 1);
        assert_eq!(serde_json::from_slice::<Json>(&req.body).unwrap(), payload);
    }
    let origin = format!("http://{}", receiver.addr);
    let error = format!("HTTP 500 from {origin}");
    let letters = dead_letters(&server, &token, "webhook").await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let dl = &letters[0];
    assert_eq!(dl["id"], job.as_str());
    assert_eq!(dl["tenant"], "acme");
    assert_eq!(dl["type"], "webhook");
    assert_eq!(dl["attempts"], MAX_ATTEMPTS);
    assert_eq!(dl["last_error"], error.as_str(), "no path, no query string");
    // Written as the API's other times are (before: `+00:00` and nine
    // digits, which Python's `fromisoformat` before 3.11 refuses).
    let time = dl["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    let time = chrono::DateTime::parse_from_rfc3339(time).unwrap();
    assert!((chrono::Utc::now() - time.to_utc()).num_seconds() < 60);
    assert_eq!(
        delivery(&pool, 1).await,
        ("dead".into(), MAX_ATTEMPTS as i64, Some(error.clone()))
    );

    // The receiver recovers; the replay delivers once.
    receiver.set_status(200);
    let replay_path = "/api/admin/dlq/replay?type=webhook";
    let body = json!({"id": job}).to_string();
    let (code, reply) = post_json(&server, replay_path, &token, &body).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(
        reply,
        json!({"ok": true, "data": {"id": job, "type": "webhook", "requeued": true}})
    );
    wait_until("the delivery is delivered", || async {
        delivery(&pool, 1).await.0 == "delivered"
    })
    .await;
    assert!(dead_letters(&server, &token, "webhook").await.is_empty());

    // A duplicate job for the same delivery sends nothing; a job queued after
    // it marks when the duplicate has been consumed.
    enqueue(&server, "webhook", "acme", r#"{"delivery_id": 1}"#).await;
    add_delivery(&pool, 2, &json!({"order_id": 43})).await;
    enqueue(&server, "webhook", "acme", r#"{"delivery_id": 2}"#).await;
    wait_until("the later delivery is delivered", || async {
        delivery(&pool, 2).await.0 == "delivered"
    })
    .await;
    let all = requests_for(&receiver, 1);
    assert_eq!(
        all.len(),
        MAX_ATTEMPTS + 1,
        "exactly one successful delivery"
    );
    assert_signed(&all[MAX_ATTEMPTS], "acme", 1);
    verify_with_standard_webhooks(&all[MAX_ATTEMPTS]);
    assert_eq!(requests_for(&receiver, 2).len(), 1);
    let (status, attempts, _) = delivery(&pool, 1).await;
    assert_eq!(
        (status.as_str(), attempts),
        ("delivered", MAX_ATTEMPTS as i64 + 1)
    );

    // The same dead letter cannot be replayed twice.
    let (code, reply) = post_json(&server, replay_path, &token, &body).await;
    assert_eq!(code, 404, "{reply}");
    assert_eq!(
        reply["error"]["message"],
        format!("no webhook dead letter with id \"{job}\"")
    );

    // The replay is in the audit log, under the token's name.
    let rows = server
        .master()
        .query(
            "SELECT actor, target, tenant, details, plugin FROM audit_log \
             WHERE action = 'dlq.replay'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.rows.len(), 1, "one replay, one record");
    let r = &rows.rows[0];
    assert_eq!(r[0], Value::Text("support".into()));
    assert_eq!(r[1], Value::Text(format!("webhook:{job}")));
    assert_eq!(r[2], Value::Text("acme".into()));
    let (Value::Json(details) | Value::Text(details)) = &r[3] else {
        panic!("details: {:?}", r[3])
    };
    let details: Json = serde_json::from_str(details).unwrap();
    assert_eq!(
        details,
        json!({"attempts": MAX_ATTEMPTS, "last_error": error})
    );
    assert_eq!(r[4], Value::Text("dead-letters".into()));

    // Another tenant's delivery 1 to the same receiver (an integrator's one
    // URL) carries its own webhook-id, so a receiver that drops repeats
    // takes it.
    let globex = tenant_with_endpoint(&server, "globex", &receiver).await;
    add_delivery(&globex, 1, &json!({"order_id": 7})).await;
    enqueue(&server, "webhook", "globex", r#"{"delivery_id": 1}"#).await;
    wait_until("globex's delivery is delivered", || async {
        delivery(&globex, 1).await.0 == "delivered"
    })
    .await;
    let ones = requests_for(&receiver, 1);
    assert_eq!(ones.len(), MAX_ATTEMPTS + 2);
    assert_signed(&ones[MAX_ATTEMPTS + 1], "globex", 1);
    verify_with_standard_webhooks(&ones[MAX_ATTEMPTS + 1]);

    assert_admin_errors(&server, &token).await;
    server.stop().await.unwrap();
}

on_both_backends!(
    webhook_replay,
    failing_webhook_is_dead_lettered_then_replayed_once
);

/// Bad type and body are 400, an unknown id 404, no token 403.
async fn assert_admin_errors(server: &Server, token: &str) {
    for path in ["/api/admin/dlq?type=mail", "/api/admin/dlq"] {
        let (code, reply) = get_json(server, path, token).await;
        assert_eq!(code, 400, "{path}: {reply}");
        assert_eq!(reply["ok"], false);
        assert_eq!(reply["error"]["code"], 400);
    }
    let (_, reply) = get_json(server, "/api/admin/dlq?type=mail", token).await;
    assert_eq!(
        reply["error"]["message"],
        "bad type \"mail\": expected webhook, export, digest or purge"
    );
    let (code, reply) = get_json(server, "/api/admin/dlq?type=export&limit=0", token).await;
    assert_eq!(
        (code, reply["error"]["message"].as_str()),
        (400, Some("bad limit \"0\": expected 1 to 1000"))
    );
    let (code, _) = post_json(
        server,
        "/api/admin/dlq/replay?type=sms",
        token,
        r#"{"id":"x"}"#,
    )
    .await;
    assert_eq!(code, 400);
    for body in ["", "not json", r#"{"id": 7}"#, r#"{"job": "x"}"#] {
        let (code, reply) =
            post_json(server, "/api/admin/dlq/replay?type=webhook", token, body).await;
        assert_eq!(code, 400, "body {body:?}: {reply}");
    }
    let (code, reply) = post_json(
        server,
        "/api/admin/dlq/replay?type=export",
        token,
        r#"{"id": "0123456789abcdef"}"#,
    )
    .await;
    assert_eq!(code, 404, "{reply}");
    assert_eq!(
        reply["error"]["message"],
        "no export dead letter with id \"0123456789abcdef\""
    );
    // A dead letter whose error quotes a NUL from its payload replays, and
    // its record says so with the NUL replaced (the audit log refuses NUL).
    let letter = queue::Job {
        id: "nul-error-1".into(),
        queue: "export".into(),
        payload: "{}".into(),
        attempts: 3,
        enqueued_at: "2026-11-27T10:00:00Z".into(),
        last_error: Some("bad email \"a\u{0}@b.c\"".into()),
        tenant: Some("acme".into()),
        dead_at: Some("2026-11-27T10:05:00Z".into()),
        not_before_ms: None,
    };
    let dead = queue::dead_letter_key("export");
    let kv = &server.services.kv;
    kv.list_push(&dead, &[serde_json::to_vec(&letter).unwrap()])
        .await
        .unwrap();
    let body = r#"{"id": "nul-error-1"}"#;
    let (code, reply) = post_json(server, "/api/admin/dlq/replay?type=export", token, body).await;
    assert_eq!(code, 200, "{reply}");
    let rows = server
        .master()
        .query(
            "SELECT details FROM audit_log WHERE target = 'export:nul-error-1'",
            &[],
        )
        .await
        .unwrap();
    let (Value::Json(details) | Value::Text(details)) = &rows.rows[0][0] else {
        panic!("details: {:?}", rows.rows)
    };
    assert!(details.contains("a\u{FFFD}@b.c"), "{details}");

    // Dead letters that come to more than the plugin's 16 MiB are refused
    // in words before the host reads them, not a trap; fewer are listed.
    let big = queue::Job {
        id: "big".into(),
        payload: "x".repeat(1 << 20),
        ..letter
    };
    let many: Vec<Vec<u8>> = (0..20).map(|_| serde_json::to_vec(&big).unwrap()).collect();
    kv.list_push(&dead, &many).await.unwrap();
    let (code, reply) = get_json(server, "/api/admin/dlq?type=export", token).await;
    assert_eq!(code, 400, "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("ask for fewer"), "{message}");
    let (code, reply) = get_json(server, "/api/admin/dlq?type=export&limit=2", token).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["data"]["dead_letters"].as_array().unwrap().len(), 2);
    kv.delete(&dead).await.unwrap();
    assert_eq!(
        server.get("/api/admin/dlq?type=webhook", None).await,
        (403, FORBIDDEN.to_string())
    );
    assert_eq!(
        server
            .post("/api/admin/dlq/replay?type=webhook", None, r#"{"id":"x"}"#)
            .await,
        (403, FORBIDDEN.to_string())
    );
}

// ---- the circuit breaker --------------------------------------------------------

/// (event, at in micros) of endpoint 1, in order.
async fn breaker_events(pool: &Pool) -> Vec<(String, i64)> {
    let rows = pool
        .query(
            "SELECT event, at FROM webhook_breaker_events WHERE endpoint_id = 1 ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    rows.rows
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Text(e), Value::Timestamp(at)) => (e.clone(), *at),
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

async fn breaker_opens_stops_sending_and_closes_after_a_trial(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let receiver = HttpReceiver::start().await;
    receiver.set_status(503);
    // Two failures open the circuit; the third attempt must not be sent.
    let cooldown = Duration::from_secs(3);
    let server = dep.start(&manifest(&receiver, 2, "3s"), "a").await;
    let pool = tenant_with_endpoint(&server, "acme", &receiver).await;
    add_delivery(&pool, 1, &json!({"order_id": 1})).await;
    let token = neo_ops::auth::create_token(server.master(), Role::Admin, "support")
        .await
        .unwrap();
    // An opening from 100 days ago: pruned by the next transition.
    let long_ago = chrono::Utc::now() - chrono::Duration::days(100);
    pool.execute(
        "INSERT INTO webhook_breaker_events (endpoint_id, event, at) VALUES (1, 'open', $1)",
        &[Value::Timestamp(long_ago.timestamp_micros())],
    )
    .await
    .unwrap();

    let job = enqueue(&server, "webhook", "acme", r#"{"delivery_id": 1}"#).await;
    wait_until("the job is dead-lettered", || async {
        !dead_letters(&server, &token, "webhook").await.is_empty()
    })
    .await;
    assert_eq!(
        receiver.requests().len(),
        2,
        "no request while the circuit is open"
    );
    let letters = dead_letters(&server, &token, "webhook").await;
    assert_eq!(letters[0]["attempts"], MAX_ATTEMPTS);
    assert_eq!(letters[0]["last_error"], "circuit open for endpoint 1");
    let events = breaker_events(&pool).await;
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names, ["open"], "one opening recorded, the old one pruned");
    let (status, attempts, _) = delivery(&pool, 1).await;
    assert_eq!((status.as_str(), attempts), ("dead", MAX_ATTEMPTS as i64));

    // Past the cooldown from the breaker's last event, the dead letter
    // replayed.
    let replay_after_cooldown = || async {
        let last = breaker_events(&pool).await.last().unwrap().1;
        let at = std::time::UNIX_EPOCH + Duration::from_micros(last as u64);
        let until = at + cooldown + Duration::from_millis(300);
        if let Ok(left) = until.duration_since(std::time::SystemTime::now()) {
            tokio::time::sleep(left).await;
        }
        let (code, reply) = post_json(
            &server,
            "/api/admin/dlq/replay?type=webhook",
            &token,
            &json!({"id": job}).to_string(),
        )
        .await;
        assert_eq!(code, 200, "{reply}");
    };
    let names = || async {
        let events = breaker_events(&pool).await;
        events.into_iter().map(|(e, _)| e).collect::<Vec<String>>()
    };

    // A trial that fails keeps the circuit open: one more request, and
    // still one opening on record (the digest counts one pause).
    replay_after_cooldown().await;
    wait_until("the job is dead-lettered again", || async {
        !dead_letters(&server, &token, "webhook").await.is_empty()
    })
    .await;
    // However many trials failed (each retry past a cooldown is one), the
    // outage keeps one opening and the latest trial.
    assert_eq!(names().await, ["open", "half_open"]);
    let trials = receiver.requests().len() - 2;
    assert!(trials >= 1);

    // After the cooldown one trial goes out; its success closes the circuit.
    receiver.set_status(200);
    replay_after_cooldown().await;
    wait_until("the trial delivers", || async {
        delivery(&pool, 1).await.0 == "delivered"
    })
    .await;
    // Closing is recorded just after the delivery is.
    wait_until("the trial closes the circuit", || async {
        names().await.last().is_some_and(|e| e == "close")
    })
    .await;
    assert_eq!(names().await, ["open", "half_open", "close"]);
    assert_eq!(receiver.requests().len(), 3 + trials);
    server.stop().await.unwrap();
}

on_both_backends!(
    breaker,
    breaker_opens_stops_sending_and_closes_after_a_trial
);

/// A delivery whose lock or circuit state cannot be read (kv unavailable;
/// here a grant that does not reach those keys) is not sent, and its row
/// records each attempt, `dead` after the last. Before, the job failed
/// before the row was touched: dead-lettered, with the row left pending.
async fn a_delivery_kv_cannot_gate_records_its_failure(backend: Backend) {
    let receiver = HttpReceiver::start().await;
    for (grant, error) in [
        ("elsewhere:", "delivery lock unavailable: "),
        (
            "webhook:delivery:",
            "circuit state of endpoint 1 unreadable: ",
        ),
    ] {
        let dep = Deployment::new(backend).await;
        let text = manifest(&receiver, 5, "30s")
            .replace(r#"kv = ["webhook:"]"#, &format!(r#"kv = ["{grant}"]"#))
            .replace("concurrency = 4", "concurrency = 4, backoff = \"100ms\"");
        let server = dep.start(&text, "a").await;
        let pool = tenant_with_endpoint(&server, "acme", &receiver).await;
        add_delivery(&pool, 1, &json!({"order_id": 1})).await;
        enqueue(&server, "webhook", "acme", r#"{"delivery_id": 1}"#).await;
        wait_until("the row is dead", || async {
            delivery(&pool, 1).await.0 == "dead"
        })
        .await;
        let (_, attempts, last_error) = delivery(&pool, 1).await;
        assert_eq!(attempts, MAX_ATTEMPTS as i64, "{grant}");
        let last_error = last_error.unwrap();
        assert!(last_error.starts_with(error), "{grant}: {last_error}");
        assert!(receiver.requests().is_empty(), "{grant}: nothing sent");
        server.stop().await.unwrap();
    }
}

on_both_backends!(
    unreadable_gate,
    a_delivery_kv_cannot_gate_records_its_failure
);

/// A delivery to an endpoint deleted since it was queued (or whose row is
/// gone) is dead at once: nothing is sent, the row says why, and the job is
/// dead-lettered on its first attempt instead of retried `max_attempts`
/// times. An inactive
/// endpoint is still retried (it may be switched back on meanwhile).
async fn a_deleted_endpoint_is_dead_at_once(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let receiver = HttpReceiver::start().await;
    let server = dep.start(&manifest(&receiver, 10, "60s"), "a").await;
    let pool = tenant_with_endpoint(&server, "acme", &receiver).await;
    let token = neo_ops::auth::create_token(server.master(), Role::Admin, "support")
        .await
        .unwrap();
    add_delivery(&pool, 1, &json!({"order_id": 1})).await;
    pool.execute("UPDATE webhook_endpoints SET active = FALSE", &[])
        .await
        .unwrap();
    let inactive = enqueue(&server, "webhook", "acme", r#"{"delivery_id": 1}"#).await;
    let letter = |job: String| {
        let (server, token) = (&server, &token);
        async move {
            let letters = dead_letters(server, token, "webhook").await;
            letters.into_iter().find(|dl| dl["id"] == job.as_str())
        }
    };
    wait_until("the inactive endpoint's job is dead-lettered", || async {
        letter(inactive.clone()).await.is_some()
    })
    .await;
    let dl = letter(inactive.clone()).await.unwrap();
    assert_eq!(dl["attempts"], MAX_ATTEMPTS, "{dl}");
    let (status, attempts, _) = delivery(&pool, 1).await;
    assert_eq!((status.as_str(), attempts), ("dead", MAX_ATTEMPTS as i64));

    add_delivery(&pool, 2, &json!({"order_id": 2})).await;
    pool.execute(
        "UPDATE webhook_endpoints SET active = TRUE, deleted_at = CURRENT_TIMESTAMP",
        &[],
    )
    .await
    .unwrap();
    let job = enqueue(&server, "webhook", "acme", r#"{"delivery_id": 2}"#).await;
    wait_until("the deleted endpoint's job is dead-lettered", || async {
        letter(job.clone()).await.is_some()
    })
    .await;
    let dl = letter(job.clone()).await.unwrap();
    assert_eq!(dl["attempts"], 1, "{dl}");
    let (status, attempts, error) = delivery(&pool, 2).await;
    assert_eq!((status.as_str(), attempts), ("dead", 1));
    assert_eq!(error.as_deref(), Some("endpoint 1 is deleted; not retried"));

    // A job for a delivery row that is not there is gone as well.
    let missing = enqueue(&server, "webhook", "acme", r#"{"delivery_id": 77}"#).await;
    wait_until("the missing delivery's job is dead-lettered", || async {
        letter(missing.clone()).await.is_some()
    })
    .await;
    let dl = letter(missing).await.unwrap();
    assert_eq!(dl["attempts"], 1, "{dl}");
    assert_eq!(
        dl["last_error"], "delivery 77 not found in tenant \"acme\"; not retried",
        "{dl}"
    );
    assert!(receiver.requests().is_empty(), "nothing was sent");
    server.stop().await.unwrap();
}

on_both_backends!(deleted_endpoint, a_deleted_endpoint_is_dead_at_once);

/// A delivery left `pending` or `failed` with no job to send it (the POS
/// died before queueing it, Redis restarted without persistence) is found
/// by the sweep and sent once; a young one, a delivered one and a dead one
/// are left alone; one the sweep already queued three times with no
/// outcome is marked dead; a dry run only lists; a sweep right after the
/// first finds nothing (what it queued is marked seen). From the command
/// line on Redis; on the embedded kv, which a command cannot reach, the
/// command refuses and the schedule's per-tenant job sweeps. Before, such
/// a delivery waited for good.
async fn the_sweep_sends_what_no_job_would(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let receiver = HttpReceiver::start().await;
    let sweeping = manifest(&receiver, 10, "60s").replace(
        r#"grants = { db = ["tenant"], kv = ["webhook:"]"#,
        "command = true\n\
         schedules = [{ cron = \"0 0 1 1 *\" }]\n\
         grants = { db = [\"master\", \"tenant:*\"], queues = [\"webhook\"], kv = [\"webhook:\"]",
    );
    let server = dep.start(&sweeping, "a").await;
    let pool = tenant_with_endpoint(&server, "acme", &receiver).await;
    for id in [1, 2, 3, 4, 6] {
        add_delivery(&pool, id, &json!({"order_id": id})).await;
    }
    let two_hours_ago = match backend {
        Backend::Real => "now() - interval '2 hours'",
        Backend::Embedded => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 hours')",
    };
    let set = |sql: String| {
        let pool = pool.clone();
        async move { pool.execute(&sql, &[]).await.unwrap() }
    };
    set(format!(
        "UPDATE webhook_deliveries SET created_at = {two_hours_ago}"
    ))
    .await;
    for (id, status) in [(2, "failed"), (3, "delivered"), (4, "dead")] {
        set(format!(
            "UPDATE webhook_deliveries SET status = '{status}' WHERE id = {id}"
        ))
        .await;
    }
    add_delivery(&pool, 5, &json!({"order_id": 5})).await;
    // Delivery 6 was queued again three times already, with no outcome.
    let kv = &server.services.kv;
    kv.set("webhook:sweeps:acme:6", b"3", None).await.unwrap();
    let sweep = async |args: &[&str]| {
        let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
        let out = server.command("webhook-dispatch", &args).await.unwrap();
        let doc: Json = serde_json::from_str(&out).unwrap();
        assert_eq!(doc["ok"], true, "{doc}");
        doc["data"]["stuck"].clone()
    };

    // As text, for a person.
    let text = server
        .command("webhook-dispatch", &["--dry-run"])
        .await
        .unwrap();
    assert_eq!(
        text,
        "1 tenant(s) swept (dry run: nothing queued): 1 with deliveries no job has tried for 60 min\n  acme: would queue 1, 2, 6\n"
    );
    let listed = sweep(&["--dry-run"]).await;
    assert_eq!(
        listed,
        json!([{"tenant": "acme", "deliveries": [1, 2, 6], "queued": [], "dead": []}])
    );
    match backend {
        Backend::Real => {
            let swept = sweep(&["--tenant", "acme"]).await;
            assert_eq!(
                swept,
                json!([{"tenant": "acme", "deliveries": [1, 2, 6], "queued": [1, 2], "dead": [6]}])
            );
            // What it queued is marked seen and counted, so a sweep at once
            // again finds nothing to queue.
            for id in [1, 2] {
                let seen = kv.get(&format!("webhook:seen:acme:{id}")).await.unwrap();
                assert!(seen.is_some(), "delivery {id} marked seen");
            }
            assert_eq!(sweep(&[]).await, json!([]));
        }
        Backend::Embedded => {
            let refused = server.command("webhook-dispatch", &[]).await.unwrap_err();
            assert!(
                refused
                    .to_string()
                    .contains("without REDIS_URL it lives in the serving process's memory"),
                "{refused}"
            );
            neo_ops::triggers::schedule::fire(
                &server.runtime,
                "webhook-dispatch",
                0,
                chrono::Utc::now(),
            )
            .await;
        }
    }
    wait_until(
        "both stuck deliveries are delivered, the third dead",
        || async {
            delivery(&pool, 1).await.0 == "delivered"
                && delivery(&pool, 2).await.0 == "delivered"
                && delivery(&pool, 6).await.0 == "dead"
        },
    )
    .await;
    // An outcome recorded clears the count of sweeps with none.
    for id in [1, 2, 6] {
        let count = kv.get(&format!("webhook:sweeps:acme:{id}")).await.unwrap();
        assert_eq!(count, None, "delivery {id}");
    }
    for id in [1, 2] {
        let sent = requests_for(&receiver, id);
        assert_eq!(sent.len(), 1, "delivery {id} sent once");
        assert_signed(&sent[0], "acme", id);
    }
    assert_eq!(receiver.requests().len(), 2, "nothing else was sent");
    let (status, _, error) = delivery(&pool, 6).await;
    assert_eq!(status, "dead");
    assert_eq!(
        error.as_deref(),
        Some("queued again by the sweep 3 times with no outcome recorded; not retried")
    );
    assert_eq!(delivery(&pool, 4).await.0, "dead");
    assert_eq!(delivery(&pool, 5).await.0, "pending");
    assert_eq!(sweep(&["--dry-run"]).await, json!([]));
    server.stop().await.unwrap();
}

on_both_backends!(sweep, the_sweep_sends_what_no_job_would);

/// A receiver that answers 410 Gone wants no more deliveries (Standard
/// Webhooks): the delivery is dead on its first attempt, the endpoint is
/// switched off on record, and the circuit is not charged. Before, 410 was
/// retried like a 500, every later delivery to it too.
async fn a_gone_receiver_disables_its_endpoint(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let receiver = HttpReceiver::start().await;
    receiver.set_status(410);
    let server = dep.start(&manifest(&receiver, 1, "60s"), "a").await;
    let pool = tenant_with_endpoint(&server, "acme", &receiver).await;
    let token = neo_ops::auth::create_token(server.master(), Role::Admin, "support")
        .await
        .unwrap();
    add_delivery(&pool, 1, &json!({"order_id": 1})).await;
    let job = enqueue(&server, "webhook", "acme", r#"{"delivery_id": 1}"#).await;
    wait_until("the gone receiver's job is dead-lettered", || async {
        !dead_letters(&server, &token, "webhook").await.is_empty()
    })
    .await;
    let letters = dead_letters(&server, &token, "webhook").await;
    assert_eq!(
        (&letters[0]["id"], &letters[0]["attempts"]),
        (&json!(job), &json!(1))
    );
    let reason = format!(
        "HTTP 410 from http://{}; endpoint 1 disabled",
        receiver.addr
    );
    assert_eq!(
        delivery(&pool, 1).await,
        ("dead".into(), 1, Some(reason.clone()))
    );
    endpoint_1_is_off(&pool).await;
    let records = server
        .master()
        .query(
            "SELECT actor, target, tenant FROM audit_log WHERE action = 'webhook.endpoint_disabled'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        records.rows,
        vec![vec![
            Value::Text("webhook-dispatch (queue)".into()),
            Value::Text("webhook_endpoint:1".into()),
            Value::Text("acme".into()),
        ]]
    );
    assert_eq!(receiver.requests().len(), 1, "sent once, not retried");
    // A breaker with a threshold of one failure stayed closed.
    assert!(breaker_events(&pool).await.is_empty());

    // Switched on again while the audit log can take no record (no id left
    // after the chain's end): the endpoint is switched off all the same,
    // and the delivery says so. Before, it said "disabling endpoint 1
    // failed" over an endpoint that was off.
    let on = "UPDATE webhook_endpoints SET active = TRUE WHERE id = 1";
    pool.execute(on, &[]).await.unwrap();
    server
        .master()
        .execute(
            "UPDATE audit_log SET id = 9223372036854775807 \
             WHERE id = (SELECT MAX(id) FROM audit_log)",
            &[],
        )
        .await
        .unwrap();
    add_delivery(&pool, 2, &json!({"order_id": 2})).await;
    enqueue(&server, "webhook", "acme", r#"{"delivery_id": 2}"#).await;
    wait_until("the second job is dead-lettered", || async {
        dead_letters(&server, &token, "webhook").await.len() == 2
    })
    .await;
    assert_eq!(delivery(&pool, 2).await, ("dead".into(), 1, Some(reason)));
    endpoint_1_is_off(&pool).await;
    server.stop().await.unwrap();
}

on_both_backends!(gone_receiver, a_gone_receiver_disables_its_endpoint);

/// One tenant's slow receiver does not hold up another tenant's webhooks:
/// the queue's workers take the next jobs while the slow ones wait.
async fn a_slow_receiver_holds_up_no_other_tenant(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let receiver = HttpReceiver::start().await;
    receiver.set_slow("/hooks/", Duration::from_secs(3));
    let server = dep.start(&manifest(&receiver, 10, "60s"), "a").await;
    let acme = tenant_with_endpoint(&server, "acme", &receiver).await;
    let globex = create_tenant(&server, "globex").await;
    globex
        .execute(
            "INSERT INTO webhook_endpoints (id, url, secret) VALUES (1, $1, $2)",
            &[
                Value::Text(receiver.url("/fast")),
                Value::Text(SECRET.into()),
            ],
        )
        .await
        .unwrap();
    for id in 1..=3 {
        add_delivery(&acme, id, &json!({"order_id": id})).await;
        enqueue(
            &server,
            "webhook",
            "acme",
            &json!({"delivery_id": id}).to_string(),
        )
        .await;
    }
    add_delivery(&globex, 1, &json!({"order_id": 9})).await;
    enqueue(&server, "webhook", "globex", r#"{"delivery_id": 1}"#).await;
    wait_until("globex's delivery is delivered", || async {
        delivery(&globex, 1).await.0 == "delivered"
    })
    .await;
    let mut acme_done = 0;
    for id in 1..=3 {
        if delivery(&acme, id).await.0 == "delivered" {
            acme_done += 1;
        }
    }
    assert!(
        acme_done < 3,
        "globex waited behind all of acme's deliveries"
    );
    wait_until("acme's deliveries are delivered", || async {
        let mut done = true;
        for id in 1..=3 {
            done &= delivery(&acme, id).await.0 == "delivered";
        }
        done
    })
    .await;
    server.stop().await.unwrap();
}

on_both_backends!(slow_receiver, a_slow_receiver_holds_up_no_other_tenant);

// ---- export jobs ----------------------------------------------------------------

/// An attachment of a raw message, decoded (lettre picks quoted-printable or
/// base64, and may split the filename RFC 2231-style as `filename*0=`).
fn attachment(raw: &str, filename: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let start = [
        format!("filename=\"{filename}\""),
        format!("filename*0=\"{filename}\""),
    ]
    .iter()
    .find_map(|needle| raw.find(needle.as_str()))
    .unwrap_or_else(|| panic!("no attachment {filename} in\n{raw}"));
    let part = &raw[start..];
    let headers_end = part.find("\n\n").unwrap();
    let headers = part[..headers_end].to_ascii_lowercase();
    let body = &part[headers_end + 2..];
    let body = &body[..body.find("\n--").unwrap_or(body.len())];
    if headers.contains("content-transfer-encoding: base64") {
        use base64::Engine;
        let compact: String = body.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    } else if headers.contains("content-transfer-encoding: quoted-printable") {
        quoted_printable(body)
    } else {
        body.to_string()
    }
}

fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let mut out = Vec::new();
    let mut bytes = joined.bytes();
    while let Some(b) = bytes.next() {
        if b == b'=' {
            let hex: Vec<u8> = bytes.by_ref().take(2).collect();
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap());
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).unwrap()
}

/// A server with the three plugins, tenant acme, and an admin's token.
async fn export_server(backend: Backend) -> (Deployment, HttpReceiver, Server, Pool, String) {
    let dep = Deployment::new(backend).await;
    let receiver = HttpReceiver::start().await;
    let server = dep.start(&manifest(&receiver, 5, "60s"), "a").await;
    let pool = create_tenant(&server, "acme").await;
    let token = neo_ops::auth::create_token(server.master(), Role::Admin, "support")
        .await
        .unwrap();
    (dep, receiver, server, pool, token)
}

async fn export_mails_a_csv_and_a_bad_job_is_dead_lettered(backend: Backend) {
    let (dep, _receiver, server, pool, token) = export_server(backend).await;
    // acme's zone is Asia/Kolkata: 2026-11-24 is [11-23T18:30Z, 11-24T18:30Z).
    let orders = [
        (1, "2026-11-23T18:29:59Z", false), // the 23rd in Kolkata
        (2, "2026-11-23T18:30:00Z", false),
        (3, "2026-11-24T18:29:59Z", false),
        (4, "2026-11-24T10:00:00Z", true),  // deleted
        (5, "2026-11-24T18:30:00Z", false), // the 25th in Kolkata
    ];
    for (id, placed, deleted) in orders {
        let at = chrono::DateTime::parse_from_rfc3339(placed)
            .unwrap()
            .timestamp_micros();
        pool.execute(
            "INSERT INTO orders (id, status, total_minor, tip_minor, placed_at, deleted_at) \
             VALUES ($1, 'PAID', $2, 0, $3, $4)",
            &[
                Value::Int(id),
                Value::Int(id * 1000),
                Value::Timestamp(at),
                if deleted {
                    Value::Timestamp(at)
                } else {
                    Value::Null
                },
            ],
        )
        .await
        .unwrap();
    }
    pool.execute(
        "INSERT INTO order_items (order_id, name, quantity, unit_price_minor) VALUES (2, 'Chai, masala', 2, 1000)",
        &[],
    )
    .await
    .unwrap();

    let good = r#"{"kind": "orders", "from": "2026-11-24", "to": "2026-11-24", "email": "owner@acme.example"}"#;
    let good_job = enqueue(&server, "export", "acme", good).await;
    let bad = r#"{"kind": "menu", "from": "2026-11-24", "to": "2026-11-24", "email": "owner@acme.example"}"#;
    let bad_job = enqueue(&server, "export", "acme", bad).await;
    // For a tenant deleted since the job was queued.
    let gone_job = enqueue(&server, "export", "ghost", good).await;
    // Refused quoting customers' addresses, which the dead letter masks.
    let two = r#"{"kind": "orders", "from": "2026-11-24", "to": "2026-11-24", "email": "ann@a.example, bob@b.example"}"#;
    let two_job = enqueue(&server, "export", "acme", two).await;
    wait_until("the export is mailed", || async {
        !dep.sent_mail().is_empty()
    })
    .await;
    let mail = &dep.sent_mail()[0];
    assert!(mail.contains("To: owner@acme.example"), "{mail}");
    assert!(
        mail.contains("Subject: Orders export for acme: 2026-11-24 to 2026-11-24"),
        "{mail}"
    );
    let csv = attachment(mail, "orders-acme-2026-11-24-2026-11-24.csv");
    assert_eq!(
        csv.replace("\r\n", "\n"),
        "order_id,placed_at,status,table_id,customer_id,items,total_minor,tip_minor,complimentary,prep_seconds\n\
         2,2026-11-23T18:30:00Z,PAID,,,2,2000,0,false,\n\
         3,2026-11-24T18:29:59Z,PAID,,,0,3000,0,false,\n"
    );

    wait_until("the refused exports are dead-lettered", || async {
        dead_letters(&server, &token, "export").await.len() == 3
    })
    .await;
    let letters = dead_letters(&server, &token, "export").await;
    let letter = |id: &str| {
        letters
            .iter()
            .find(|l| l["id"] == id)
            .unwrap_or_else(|| panic!("no letter {id}: {letters:?}"))
    };
    let bad_letter = letter(&bad_job);
    assert_eq!(bad_letter["tenant"], "acme");
    assert_eq!(bad_letter["type"], "export");
    // Refused as bad in itself (400): dead-lettered at once, not retried.
    assert_eq!(bad_letter["attempts"], 1);
    assert_eq!(
        bad_letter["last_error"],
        "bad export kind \"menu\": expected orders"
    );
    // Its tenant gone (410): the same, no retry would find it.
    let gone_letter = letter(&gone_job);
    assert_eq!(gone_letter["attempts"], 1);
    assert_eq!(gone_letter["last_error"], "tenant \"ghost\" not found");
    assert_eq!(
        letter(&two_job)["last_error"],
        "bad export email \"****@a.example, ****@b.example\": expected one address"
    );
    assert!(dead_letters(&server, &token, "webhook").await.is_empty());
    assert_eq!(dep.sent_mail().len(), 1, "the bad job mailed nothing");

    // The mailed job delivered again, as after its process died before the
    // queue heard it was done: it is done at once, and mails nothing.
    // Before, every redelivery mailed the customers' orders again.
    let again = queue::Job {
        id: good_job,
        queue: "export".into(),
        payload: good.into(),
        attempts: 1,
        enqueued_at: chrono::Utc::now().to_rfc3339(),
        last_error: None,
        tenant: Some("acme".into()),
        dead_at: None,
        not_before_ms: None,
    };
    queue::push(&server.services.kv, &again).await.unwrap();
    let ok_runs = |n: u32| {
        let line = format!(
            "neo_ops_invocations_total{{plugin=\"export-jobs\",trigger=\"queue\",outcome=\"ok\"}} {n}\n"
        );
        server.services.metrics.render().contains(&line)
    };
    wait_until("the job delivered again is done", || async { ok_runs(2) }).await;
    assert_eq!(dep.sent_mail().len(), 1, "mailed once");
    server.stop().await.unwrap();
}

on_both_backends!(export, export_mails_a_csv_and_a_bad_job_is_dead_lettered);

/// An export whose CSV would pass 8 MiB (about 190,000 orders) fails with
/// the reason, asking for a shorter range, rather than growing until the
/// plugin's memory traps: after its attempts it is dead-lettered saying so,
/// and nothing is mailed.
async fn an_export_too_large_to_mail_says_so(backend: Backend) {
    let (dep, _receiver, server, pool, token) = export_server(backend).await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .unwrap()
        .timestamp_micros();
    pool.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000) \
         INSERT INTO orders (id, status, total_minor, tip_minor, placed_at) \
         SELECT i, 'PAID', i, 0, $1 FROM n",
        &[Value::Timestamp(at)],
    )
    .await
    .unwrap();
    let job = r#"{"kind": "orders", "from": "2026-11-20", "to": "2026-11-20", "email": "owner@acme.example"}"#;
    let id = enqueue(&server, "export", "acme", job).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let letters = loop {
        let letters = dead_letters(&server, &token, "export").await;
        if !letters.is_empty() {
            break letters;
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(letters[0]["id"], id.as_str());
    let reason = letters[0]["last_error"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "orders export for \"acme\" (2026-11-20 to 2026-11-20) is over 8 MiB after "
        ) && reason.ends_with(" orders: ask for a shorter range"),
        "{reason}"
    );
    assert!(dep.sent_mail().is_empty(), "nothing was mailed");
    server.stop().await.unwrap();
}

on_both_backends!(export_too_large, an_export_too_large_to_mail_says_so);

/// The dead-letter admin alone, with a command (no consumer: a replayed
/// job stays on its queue to be seen).
const DEAD_LETTERS_ONLY: &str = r#"
[plugins.dead-letters]
component = "dead_letters.wasm"
routes = [{ method = "POST", path = "/api/admin/dlq/replay", role = "admin" }]
command = true
grants = { queues = ["export"], audit = true }
limits = { memory = "16MiB" }
"#;

/// `neo-ops run dead-letters list | replay` reads and moves the dead
/// letters the server keeps in Redis; a dry run (from the command line or
/// `?dry_run=1`) moves nothing; without Redis the command refuses rather
/// than list an empty queue of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_from_the_command_line() {
    let dep = Deployment::new(Backend::Real).await;
    let server = dep.start(DEAD_LETTERS_ONLY, "a").await;
    let dead = queue::dead_letter_key("export");
    let letter = |id: &str, error: &str| queue::Job {
        id: id.into(),
        queue: "export".into(),
        payload: "{}".into(),
        attempts: 2,
        enqueued_at: "2026-12-01T10:00:00Z".into(),
        last_error: Some(error.into()),
        tenant: Some("acme".into()),
        dead_at: Some("2026-12-01T10:05:00Z".into()),
        not_before_ms: None,
    };
    let planted = [
        letter("cli-1", "smtp said\tno"),
        letter("cli-2", "bad email"),
    ];
    let raw: Vec<Vec<u8>> = planted
        .iter()
        .map(|l| serde_json::to_vec(l).unwrap())
        .collect();
    server.services.kv.list_push(&dead, &raw).await.unwrap();
    let cli = support::Cli::new(DEAD_LETTERS_ONLY);
    let settings = dep.settings("a");
    let run = |args: &[&str]| {
        let mut argv = vec!["run", "dead-letters"];
        argv.extend_from_slice(args);
        tokio::task::block_in_place(|| cli.run_on(&argv, &settings))
    };
    let letters_left = async || {
        let left = server.services.kv.list_range(&dead, 0, -1).await.unwrap();
        left.len()
    };

    let listed = run(&["list", "export"]);
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    let mut lines: Vec<&str> = listed.stdout.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "cli-1\tacme\t2\t2026-12-01T10:05:00Z\tsmtp said no",
            "cli-2\tacme\t2\t2026-12-01T10:05:00Z\tbad email",
        ]
    );
    let json = run(&["list", "export", "--limit", "1", "--json"]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let doc: Json = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["data"]["type"], "export");
    assert_eq!(doc["data"]["dead_letters"].as_array().unwrap().len(), 1);
    let bad = run(&["list", "export", "--limit", "0"]);
    assert_eq!(bad.code, Some(1));
    assert!(bad.stderr.contains("bad --limit \"0\""), "{}", bad.stderr);
    let bad = run(&["list", "mail"]);
    assert!(bad.stderr.contains("bad type \"mail\""), "{}", bad.stderr);

    // Newer letters of a megabyte each, more than the plugin may be handed
    // at once (half its 16 MiB): the dry run still finds the one asked
    // for, as the replay does.
    let big = queue::Job {
        id: "big".into(),
        payload: "x".repeat(1 << 20),
        ..letter("big", "too big")
    };
    let many: Vec<Vec<u8>> = (0..20).map(|_| serde_json::to_vec(&big).unwrap()).collect();
    server.services.kv.list_push(&dead, &many).await.unwrap();
    let dry = run(&["replay", "export", "cli-1", "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert_eq!(
        dry.stdout,
        "would requeue export job \"cli-1\" (tenant \"acme\", dead after 2 attempts)\n\
         dry run: nothing was changed\n"
    );
    let token = neo_ops::auth::create_token(server.master(), Role::Admin, "support")
        .await
        .unwrap();
    let (code, body) = server
        .post(
            "/api/admin/dlq/replay?type=export&dry_run=1",
            Some(&token),
            r#"{"id": "cli-1"}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let doc: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["data"]["requeued"], false, "{doc}");
    assert_eq!(letters_left().await, 22);
    // Asked for in the body, or in another spelling: still only a preview.
    for (query, body) in [
        ("", r#"{"id": "cli-1", "dry_run": true}"#),
        ("&dry_run=YES", r#"{"id": "cli-1"}"#),
    ] {
        let path = format!("/api/admin/dlq/replay?type=export{query}");
        let (code, answer) = server.post(&path, Some(&token), body).await;
        assert_eq!(code, 200, "{answer}");
        assert!(answer.contains(r#""requeued":false"#), "{body}: {answer}");
    }
    assert_eq!(letters_left().await, 22);
    assert!(support::queued_jobs(&server, "export").await.is_empty());

    let replayed = run(&["replay", "export", "cli-1"]);
    assert_eq!(replayed.code, Some(0), "{}", replayed.stderr);
    assert_eq!(
        replayed.stdout,
        "requeued export job \"cli-1\" (tenant \"acme\", dead after 2 attempts)\n"
    );
    assert_eq!(letters_left().await, 21);
    let queued = support::queued_jobs(&server, "export").await;
    assert_eq!(
        queued.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        ["cli-1"]
    );
    let records = server
        .master()
        .query(
            "SELECT actor, plugin FROM audit_log \
             WHERE action = 'dlq.replay' AND target = 'export:cli-1'",
            &[],
        )
        .await
        .unwrap();
    // The operator who ran it (the command inherits this process's user).
    assert_eq!(
        records.rows,
        vec![vec![
            Value::Text(neo_ops::audit_log::cli_actor()),
            Value::Text("dead-letters".into())
        ]]
    );
    let again = run(&["replay", "export", "cli-1"]);
    assert_eq!(again.code, Some(1));
    assert!(
        again
            .stderr
            .contains("no export dead letter with id \"cli-1\""),
        "{}",
        again.stderr
    );

    // Without REDIS_URL the queues are the serving process's memory.
    let embedded =
        tokio::task::block_in_place(|| cli.run(&["run", "dead-letters", "list", "export"]));
    assert_eq!(embedded.code, Some(1), "{}", embedded.stdout);
    assert!(
        embedded.stderr.contains("dead letters are kept in Redis"),
        "{}",
        embedded.stderr
    );
    server.stop().await.unwrap();
}
