//! Test alert (spec "Test Alert"): one run reaches a Slack-style webhook, the
//! ops mailbox and a real Alertmanager, which routes it on to its own webhook
//! and email receivers. A failing channel fails the run without stopping the
//! others; unconfigured channels are reported as skipped.

use crate::support;

use neo_ops::runtime::InvokeError;
use serde_json::Value as Json;
use std::path::Path;
use std::time::{Duration, Instant};
use support::alertmanager::{Alertmanager, free_port};
use support::receivers::ReceivedRequest;
use support::{Backend, Deployment, HttpReceiver, SmtpSink};

const PLUGIN: &str = "emit-test-alert";
/// How long Alertmanager may take to pass the alert on to its receivers.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
const SLACK_PATH: &str = "/services/T000/B000/not-a-real-secret";

// ---------------------------------------------------------------- helpers

fn origin(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}

/// A manifest for the plugin with the given `config` table and allow-list.
/// Settings go through `config`, never the environment: env vars are
/// process-global and the tests run in parallel.
fn manifest(config: &[(&str, String)], http: &[String]) -> String {
    let config: Vec<String> = config
        .iter()
        .map(|(k, v)| format!("{k} = {}", serde_json::to_string(v).unwrap()))
        .collect();
    let http: Vec<String> = http
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect();
    format!(
        r#"
[plugins.{PLUGIN}]
component = "emit_test_alert.wasm"
command = true
grants = {{ mail = true, http = [{}] }}
limits = {{ timeout = "30s" }}
config = {{ {} }}
"#,
        http.join(", "),
        config.join(", ")
    )
}

async fn run_json(server: &support::Server, args: &[&str]) -> Json {
    let out = server
        .command(PLUGIN, args)
        .await
        .unwrap_or_else(|e| panic!("{PLUGIN} {args:?} should succeed: {e}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not json ({e}): {out}"))
}

/// The failure's status and message; panics if the run succeeded.
async fn run_failing(server: &support::Server, args: &[&str]) -> (u16, String) {
    match server.command(PLUGIN, args).await {
        Err(InvokeError::Failed { status, message }) => (status, message),
        other => panic!("{PLUGIN} {args:?} should fail, got {other:?}"),
    }
}

fn channel<'a>(report: &'a Json, name: &str) -> &'a Json {
    report["channels"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["channel"] == name))
        .unwrap_or_else(|| panic!("no {name} channel in {report}"))
}

fn body_json(req: &ReceivedRequest) -> Json {
    serde_json::from_slice(&req.body).unwrap_or_else(|e| {
        panic!(
            "body is not json ({e}): {}",
            String::from_utf8_lossy(&req.body)
        )
    })
}

fn header<'a>(req: &'a ReceivedRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Polls `probe` every 200 ms until it yields, failing the test after `limit`.
async fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn rfc3339(v: &Json) -> chrono::DateTime<chrono::FixedOffset> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("bad time \"{s}\": {e}"))
}

// ---------------------------------------------------------------- Alertmanager

fn alertmanager_config(hook: &HttpReceiver, smtp: &SmtpSink) -> String {
    format!(
        r#"
route:
  receiver: neo-ops-test
  group_by: ["alertname", "test_id"]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: neo-ops-test
    webhook_configs:
      - url: "{hook}"
        send_resolved: false
    email_configs:
      - to: "am-oncall@example.com"
        from: "alertmanager@example.com"
        smarthost: "127.0.0.1:{smtp_port}"
        require_tls: false
        send_resolved: false
"#,
        hook = hook.url("/alertmanager-webhook"),
        smtp_port = smtp.addr.port(),
    )
}

// ---------------------------------------------------------------- tests

async fn reaches_slack_email_and_alertmanager(backend: Backend) {
    let dep = Deployment::with_smtp(backend).await;
    let slack = HttpReceiver::start().await;
    let am_hook = HttpReceiver::start().await;
    let am_smtp = SmtpSink::start().await;
    let am = Alertmanager::start(&alertmanager_config(&am_hook, &am_smtp)).await;
    let config = [
        ("slack_webhook_url", slack.url(SLACK_PATH)),
        ("ops_email", "oncall@example.com".into()),
        ("alertmanager_url", am.url.clone()),
    ];
    let allow = [origin(slack.addr), am.url.clone()];
    let server = dep.start(&manifest(&config, &allow), "a").await;

    let report = run_json(&server, &["--message", "Test alert", "--json"]).await;
    assert_eq!(report["ok"], true, "{report}");
    for name in ["slack", "email", "alertmanager"] {
        assert_eq!(channel(&report, name)["status"], "ok", "{report}");
    }
    let id = report["id"].as_str().expect("correlation id").to_string();

    assert_slack_message(&slack, "Test alert", &id);
    assert_ops_email(&dep, "oncall@example.com", "Test alert", &id);
    assert_alertmanager_holds_alert(&am, &id).await;
    assert_alertmanager_webhook(&am_hook, "Test alert", &id).await;
    assert_alertmanager_email(&am_smtp, &id).await;
    server.stop().await.unwrap();
}
on_both_backends!(reaches_every_channel, reaches_slack_email_and_alertmanager);

fn assert_slack_message(slack: &HttpReceiver, message: &str, id: &str) {
    let reqs = slack.requests();
    assert_eq!(reqs.len(), 1, "one slack post");
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, SLACK_PATH);
    assert_eq!(header(&reqs[0], "content-type"), Some("application/json"));
    let body = body_json(&reqs[0]);
    assert_eq!(body["channel"], "#ops", "{body}");
    let text = body["text"].as_str().expect("text");
    assert!(text.contains(message), "{text}");
    assert!(text.contains(id), "correlation id in {text}");
    assert!(text.contains("[TEST]"), "marked as a test: {text}");
}

fn assert_ops_email(dep: &Deployment, to: &str, message: &str, id: &str) {
    let mail = dep.sent_mail();
    assert_eq!(mail.len(), 1, "one email: {mail:?}");
    assert!(mail[0].contains(&format!("To: {to}")), "{}", mail[0]);
    assert!(
        mail[0].contains(&format!("Subject: [TEST] neo-ops test alert: {message}")),
        "{}",
        mail[0]
    );
    assert!(mail[0].contains(id), "correlation id in {}", mail[0]);
}

/// Alertmanager routed the alert to its webhook receiver with our labels.
async fn assert_alertmanager_webhook(hook: &HttpReceiver, message: &str, id: &str) {
    let req = eventually(
        "alertmanager's webhook reaches the receiver",
        DELIVERY_TIMEOUT,
        || hook.requests().into_iter().next(),
    )
    .await;
    assert_eq!(req.path, "/alertmanager-webhook");
    let payload = body_json(&req);
    assert_eq!(payload["receiver"], "neo-ops-test", "{payload}");
    assert_eq!(payload["status"], "firing", "{payload}");
    let alert = &payload["alerts"][0];
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "NeoOpsTestAlert", "{payload}");
    assert_eq!(labels["severity"], "info", "{payload}");
    assert_eq!(labels["test"], "true", "{payload}");
    assert_eq!(labels["source"], "neo-ops", "{payload}");
    assert_eq!(labels["test_id"], id, "{payload}");
    assert_eq!(alert["annotations"]["summary"], message, "{payload}");
}

/// Alertmanager holds the alert with the plugin's short lifetime (its
/// webhook shows a firing alert's endsAt as zero, so ask its API).
async fn assert_alertmanager_holds_alert(am: &Alertmanager, id: &str) {
    let url = format!("{}/api/v2/alerts", am.url);
    let filter = format!("test_id=\"{id}\"");
    let resp = reqwest::Client::new()
        .get(&url)
        .query(&[("filter", filter.as_str())])
        .send()
        .await
        .expect("alertmanager api");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let alerts: Json = resp.json().await.unwrap();
    assert_eq!(alerts.as_array().map(Vec::len), Some(1), "{alerts}");
    assert_eq!(alerts[0]["status"]["state"], "active", "{alerts}");
    let lifetime = rfc3339(&alerts[0]["endsAt"]) - rfc3339(&alerts[0]["startsAt"]);
    assert_eq!(
        lifetime.num_seconds(),
        300,
        "resolves itself after 5 minutes"
    );
}

/// Alertmanager's own email for the alert reached the SMTP server.
async fn assert_alertmanager_email(smtp: &SmtpSink, id: &str) {
    let mail = eventually(
        "alertmanager's email reaches the SMTP server",
        DELIVERY_TIMEOUT,
        || {
            smtp.messages()
                .into_iter()
                .find(|m| m.data.contains("NeoOpsTestAlert"))
        },
    )
    .await;
    assert!(
        mail.to.iter().any(|t| t.contains("am-oncall@example.com")),
        "{:?}",
        mail.to
    );
    assert!(
        mail.from.contains("alertmanager@example.com"),
        "{}",
        mail.from
    );
    assert!(mail.data.contains("FIRING"), "{}", mail.data);
    assert!(mail.data.contains(id), "test_id label in {}", mail.data);
}

async fn failing_slack_fails_the_run(backend: Backend) {
    let dep = Deployment::with_smtp(backend).await;
    let slack = HttpReceiver::start().await;
    slack.set_status(500);
    let config = [("slack_webhook_url", slack.url(SLACK_PATH))];
    let server = dep
        .start(&manifest(&config, &[origin(slack.addr)]), "a")
        .await;

    let (status, message) = run_failing(&server, &["--message", "Slack is down"]).await;
    assert_eq!(status, 502);
    assert!(
        message.starts_with("test alert failed on slack\n"),
        "{message}"
    );
    let slack_line = format!("slack: failed: status 500 from {}/…", origin(slack.addr));
    assert!(message.contains(&slack_line), "{message}");
    assert!(
        !message.contains("not-a-real-secret"),
        "webhook path is a credential: {message}"
    );
    assert!(
        message.contains("email: ok: sent to ops@example.com"),
        "{message}"
    );
    assert!(
        message.contains("alertmanager: skipped: not configured"),
        "{message}"
    );
    assert_eq!(slack.requests().len(), 1, "slack was tried once");
    // The email still went out although Slack failed first.
    let mail = dep.sent_mail();
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(mail[0].contains("Subject: [TEST] neo-ops test alert: Slack is down"));
    server.stop().await.unwrap();
}
on_both_backends!(slack_error, failing_slack_fails_the_run);

/// Without an SMTP relay the host writes mail to its outbox: the alert's
/// email reached no one, so that path failed (the file is there to read).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mail_left_in_the_outbox_is_not_a_page() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(&manifest(&[], &[]), "a").await;
    let (status, message) = run_failing(&server, &["--message", "Nobody home"]).await;
    assert_eq!(status, 502);
    assert!(
        message.starts_with("test alert failed on email\n"),
        "{message}"
    );
    assert!(
        message.contains("email: failed: written to the outbox as "),
        "{message}"
    );
    assert!(message.contains("SMTP_HOST is not set"), "{message}");
    let mail = dep.sent_mail();
    assert_eq!(mail.len(), 1, "written to the outbox all the same");
    assert!(mail[0].contains("Subject: [TEST] neo-ops test alert: Nobody home"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unconfigured_channels_are_skipped() {
    let dep = Deployment::with_smtp(Backend::Embedded).await;
    let server = dep.start(&manifest(&[], &[]), "a").await;

    let text = server
        .command(PLUGIN, &["--message", "Only email"])
        .await
        .expect("email alone is enough to succeed");
    assert!(text.starts_with("test alert \"Only email\" (id "), "{text}");
    assert!(
        text.contains(
            "slack: skipped: not configured (config slack_webhook_url unset, \
             env SLACK_WEBHOOK_URL not granted)"
        ),
        "{text}"
    );
    assert!(
        text.contains("email: ok: sent to ops@example.com, message-id "),
        "{text}"
    );
    assert!(
        text.contains("alertmanager: skipped: not configured"),
        "{text}"
    );

    let report = run_json(&server, &["--json"]).await;
    assert_eq!(report["ok"], true);
    assert_eq!(report["message"], "Test alert", "default message");
    assert_eq!(channel(&report, "slack")["status"], "skipped");
    assert_eq!(channel(&report, "email")["status"], "ok");
    assert_eq!(channel(&report, "alertmanager")["status"], "skipped");

    let mail = dep.sent_mail();
    assert_eq!(mail.len(), 2, "one email per run");
    assert!(mail.iter().all(|m| m.contains("To: ops@example.com")));
    server.stop().await.unwrap();
}

/// The monthly scheduled alert exists to prove paging works: without Slack
/// set up it fails (and is recorded so), though the email still goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_alert_without_slack_fails() {
    let dep = Deployment::with_smtp(Backend::Embedded).await;
    let scheduled = manifest(&[], &[]).replace(
        "command = true\n",
        "command = true\nschedules = [{ cron = \"0 9 1 * *\", tz = \"Asia/Kolkata\", \
         args = [\"--message\", \"Monthly test alert\"] }]\n",
    );
    let server = dep.start(&scheduled, "a").await;
    let slot = chrono::DateTime::parse_from_rfc3339("2026-12-01T03:30:00Z")
        .unwrap()
        .to_utc();
    neo_ops::triggers::schedule::fire(&server.runtime, PLUGIN, 0, slot).await;
    let runs = server
        .master()
        .query(
            "SELECT status, error FROM runs WHERE plugin = $1",
            &[neo_ops::backends::db::Value::Text(PLUGIN.into())],
        )
        .await
        .unwrap();
    assert_eq!(runs.rows.len(), 1);
    let (status, error) = match &runs.rows[0][..] {
        [
            neo_ops::backends::db::Value::Text(s),
            neo_ops::backends::db::Value::Text(e),
        ] => (s, e),
        other => panic!("{other:?}"),
    };
    assert_eq!(status, "error");
    assert!(
        error.contains("test alert failed on slack")
            && error.contains("the scheduled test alert must reach Slack #ops"),
        "{error}"
    );
    assert_eq!(dep.sent_mail().len(), 1, "the email still went");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alertmanager_rejection_fails_the_run() {
    let dep = Deployment::with_smtp(Backend::Embedded).await;
    let slack = HttpReceiver::start().await;
    let am = HttpReceiver::start().await;
    am.set_status(400);
    let config = [
        ("slack_webhook_url", slack.url(SLACK_PATH)),
        ("alertmanager_url", am.url("/")),
    ];
    let allow = [origin(slack.addr), origin(am.addr)];
    let server = dep.start(&manifest(&config, &allow), "a").await;

    // With --json a failed run's output is the report itself, as a
    // successful run's is, and the run still fails (502, exit 1).
    let args = ["--severity", "critical", "--json"]
        .map(String::from)
        .to_vec();
    let out = neo_ops::triggers::command::run(&server.runtime, PLUGIN, args)
        .await
        .unwrap();
    assert_eq!(out.status, 502);
    let report: Json = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(channel(&report, "slack")["status"], "ok");
    assert_eq!(channel(&report, "email")["status"], "ok");
    let am_result = channel(&report, "alertmanager");
    assert_eq!(am_result["status"], "failed");
    assert!(
        am_result["detail"]
            .as_str()
            .unwrap()
            .starts_with("status 400 from "),
        "{am_result}"
    );

    // What was posted is Alertmanager's v2 shape: an array of one alert.
    let reqs = am.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("POST", "/api/v2/alerts")
    );
    let alerts = body_json(&reqs[0]);
    assert_eq!(alerts.as_array().map(Vec::len), Some(1), "{alerts}");
    assert_eq!(alerts[0]["labels"]["severity"], "critical");
    assert_eq!(alerts[0]["labels"]["test"], "true");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_alertmanager_is_reported() {
    let dep = Deployment::with_smtp(Backend::Embedded).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = [("alertmanager_url", closed.clone())];
    let server = dep
        .start(&manifest(&config, std::slice::from_ref(&closed)), "a")
        .await;

    let (_, message) = run_failing(&server, &[]).await;
    assert!(
        message.contains(&format!(
            "alertmanager: failed: unavailable: request to {closed} failed"
        )),
        "{message}"
    );
    assert_eq!(dep.sent_mail().len(), 1, "email still sent");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_text_is_escaped() {
    let dep = Deployment::with_smtp(Backend::Embedded).await;
    let slack = HttpReceiver::start().await;
    let config = [("slack_webhook_url", slack.url(SLACK_PATH))];
    let server = dep
        .start(&manifest(&config, &[origin(slack.addr)]), "a")
        .await;

    run_json(&server, &["--message", "deploy <!channel> & co", "--json"]).await;
    let body = body_json(&slack.requests()[0]);
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("deploy &lt;!channel&gt; &amp; co"), "{text}");
    assert!(
        !text.contains("<!channel>"),
        "must not ping everyone: {text}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_sends_nothing() {
    let dep = Deployment::with_smtp(Backend::Embedded).await;
    let slack = HttpReceiver::start().await;
    let am = HttpReceiver::start().await;
    let config = [
        ("slack_webhook_url", slack.url(SLACK_PATH)),
        ("alertmanager_url", am.url("")),
    ];
    let allow = [origin(slack.addr), origin(am.addr)];
    let server = dep.start(&manifest(&config, &allow), "a").await;

    let report = run_json(&server, &["--message", "Rehearsal", "--dry-run", "--json"]).await;
    for name in ["slack", "email", "alertmanager"] {
        assert_eq!(channel(&report, name)["status"], "dry-run", "{report}");
    }
    assert_eq!(channel(&report, "slack")["payload"]["channel"], "#ops");
    let am_payload = &channel(&report, "alertmanager")["payload"];
    assert_eq!(am_payload[0]["labels"]["alertname"], "NeoOpsTestAlert");
    assert_eq!(am_payload[0]["annotations"]["summary"], "Rehearsal");
    assert!(slack.requests().is_empty() && am.requests().is_empty());
    assert!(dep.sent_mail().is_empty(), "a dry run sends no mail");
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_arguments_are_refused() {
    let dep = Deployment::with_smtp(Backend::Embedded).await;
    let server = dep.start(&manifest(&[], &[]), "a").await;
    let cases: &[(&[&str], &str)] = &[
        (&["--mesage", "x"], "unknown flag \"--mesage\""),
        (&["--severity", "loud"], "unknown severity \"loud\""),
        (&["hello"], "unexpected argument \"hello\""),
        (&["--message", " "], "--message must not be empty"),
    ];
    for (args, expected) in cases {
        let (status, message) = run_failing(&server, args).await;
        assert_eq!(status, 400, "{args:?}");
        assert!(message.starts_with(expected), "{args:?}: {message}");
    }
    assert!(dep.sent_mail().is_empty(), "refused runs send nothing");
    server.stop().await.unwrap();
}

/// The shipped manifest runs the test monthly and grants what the plugin reads.
#[test]
fn shipped_manifest_entry() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins.toml");
    let manifest = neo_ops::manifest::load(&path).expect("plugins.toml is valid");
    let p = manifest
        .plugins
        .iter()
        .find(|p| p.name == PLUGIN)
        .expect("emit-test-alert in plugins.toml");
    assert!(p.command);
    assert_eq!(p.schedules.len(), 1);
    assert_eq!(p.schedules[0].cron.as_str(), "0 9 1 * *");
    assert_eq!(p.schedules[0].tz.name(), "Asia/Kolkata");
    assert_eq!(p.schedules[0].args, ["--message", "Monthly test alert"]);
    assert!(p.grants.mail);
    assert_eq!(
        p.grants.env,
        ["SLACK_WEBHOOK_URL", "OPS_EMAIL", "ALERTMANAGER_URL"]
    );
    assert!(
        p.grants
            .http
            .iter()
            .any(|e| (e.scheme.as_str(), e.host.as_str(), e.port)
                == ("https", "hooks.slack.com", 443))
    );
}

/// The monthly schedule goes through the same path with its own args.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduled_run_sends_the_monthly_alert() {
    use neo_ops::runtime::{Invocation, Trigger};
    let dep = Deployment::with_smtp(Backend::Embedded).await;
    let slack = HttpReceiver::start().await;
    let config = [("slack_webhook_url", slack.url(SLACK_PATH))];
    let server = dep
        .start(&manifest(&config, &[origin(slack.addr)]), "a")
        .await;
    let inv = Invocation {
        trigger: Trigger::Schedule {
            cron: "0 9 1 * *".into(),
            time_zone: "Asia/Kolkata".into(),
            slot_micros: 0,
            args: vec!["--message".into(), "Monthly test alert".into()],
        },
        tenant: None,
        principal: None,
        dry_run: false,
        request_id: "sched-0001".into(),
    };
    let out = server
        .runtime
        .invoke(PLUGIN, inv)
        .await
        .expect("scheduled run");
    let text = String::from_utf8_lossy(&out.body);
    assert!(
        text.contains("email: ok: sent to ops@example.com"),
        "{text}"
    );
    assert!(text.contains("slack: ok"), "{text}");
    assert_eq!(slack.requests().len(), 1);
    let mail = dep.sent_mail();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].contains("Subject: [TEST] neo-ops test alert: Monthly test alert"));
    assert!(
        mail[0].contains("Sent by:        schedule \"0 9 1 * *\" (Asia/Kolkata)"),
        "{}",
        mail[0]
    );
    server.stop().await.unwrap();
}
