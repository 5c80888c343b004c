//! The web console at `/admin/` in real headless Chromium (chromedriver +
//! fantoccini), on Postgres, Redis and a real SMTP server: a super_admin
//! signs in, finds a demo order, resends its invoice through a confirmation
//! (the mail arrives; a second click is "already done"), and sees the
//! audit record; an admin sees no support actions; a dead letter is
//! replayed from the page; preflight shows the failing check first; a wrong
//! token is refused in words; signing out forgets the token. The pages
//! cause no CSP report, and every view is screenshotted at 1280 and 390 px.

use crate::support::{self, Backend, Deployment, Server};
use fantoccini::Locator;
use neo_ops::backends::db::Value;
use neo_ops::manifest::Role;
use serde_json::Value as Json;
use std::time::{Duration, Instant};
use support::webdriver::Session;

/// The page, the plugins it calls (the support console's block comes from
/// its own test) and two checks, one failing.
const PLUGINS: &str = r#"
[plugins.console]
component = "console.wasm"
routes = [
  { method = "GET", path = "/admin" },
  { method = "GET", path = "/admin/" },
  { method = "GET", path = "/admin/console.js" },
  { method = "GET", path = "/admin/console.css" },
]
limits = { memory = "16MiB", timeout = "2s" }

[plugins.dead-letters]
component = "dead_letters.wasm"
routes = [
  { method = "GET", path = "/api/admin/dlq", role = "admin" },
  { method = "POST", path = "/api/admin/dlq/replay", role = "admin" },
]
grants = { queues = ["webhook", "export", "digest", "purge"], audit = true }

[plugins.csp-reports]
component = "csp_reports.wasm"
routes = [
  { method = "POST", path = "/csp/report" },
  { method = "GET", path = "/admin/csp/reports", role = "admin" },
]
grants = { kv = ["csp:"] }

[plugins.check-storage]
component = "check_storage.wasm"
check = true
limits = { timeout = "20s", memory = "32MiB" }

[plugins.test-panic-check]
component = "test_panic_check.wasm"
check = true
"#;

/// Polls the text of `css` until it contains `needle` (10 s at most).
async fn wait_text(s: &Session, css: &str, needle: &str) -> String {
    let script = format!(
        "const e = document.querySelector({}); return e ? e.innerText : null;",
        Json::from(css)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = s
            .eval(&script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed {needle:?}; it shows {text:?}\npage: {}",
            s.visible_text().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(s: &Session, locator: Locator<'_>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.client.find(locator).await {
            Ok(e) if e.is_displayed().await.unwrap_or(false) => {
                e.click().await.unwrap();
                return;
            }
            _ if Instant::now() > deadline => panic!("{locator:?} never became clickable"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn button(label: &str) -> String {
    format!("//button[normalize-space(text())='{label}']")
}

async fn sign_in(s: &Session, server: &Server, token: &str) {
    s.client.goto(&server.url("/admin/")).await.unwrap();
    let field = s.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys(token).await.unwrap();
    // The keyboard alone signs in.
    field.send_keys("\u{E007}").await.unwrap();
}

/// Searches tenant acme for `order` in the support view and waits for its card.
async fn search(s: &Session, order: &str) {
    let form = s.client.find(Locator::Id("support-form")).await.unwrap();
    for (field, value) in [("tenant", "acme"), ("order", order)] {
        let css = format!("input[name={field}]");
        let input = form.find(Locator::Css(&css)).await.unwrap();
        input.send_keys(value).await.unwrap();
    }
    let submit = form
        .find(Locator::Css("button[type=submit]"))
        .await
        .unwrap();
    submit.click().await.unwrap();
    wait_text(s, "#support-results", &format!("Order {order}")).await;
}

async fn open(s: &Session, view: &str) {
    let css = format!("nav button[data-view='{view}']");
    click(s, Locator::Css(&css)).await;
}

/// Screens of every view at one width, saved as `console-<view>-<width>.png`.
async fn screenshots(s: &Session, width: u32, views: &[(&str, &str, &str)]) {
    for (view, css, needle) in views {
        open(s, view).await;
        wait_text(s, css, needle).await;
        s.screenshot(&format!("console-{view}-{width}.png")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_call_console_in_a_real_browser() {
    let dep = Deployment::new(Backend::Real).await;
    let manifest = format!("{PLUGINS}{}", crate::console::MANIFEST);
    let server = dep.start(&manifest, "a").await;
    let db = &server.services.db;
    db.create_tenant("acme", "Acme Diner").await.unwrap();
    let acme = db.tenant("acme").await.unwrap();
    neo_ops::demo::seed(&acme, neo_ops::demo::DemoSize::default())
        .await
        .unwrap();
    let order = acme
        .query(
            "SELECT o.id FROM orders o JOIN invoices i ON i.order_id = o.id \
             JOIN customers c ON c.id = o.customer_id WHERE c.email IS NOT NULL \
             ORDER BY o.id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    let Value::Int(order) = order.rows[0][0] else {
        panic!("no demo order with an invoice")
    };
    let root = neo_ops::auth::create_token(server.master(), Role::SuperAdmin, "oncall")
        .await
        .unwrap();
    let admin = neo_ops::auth::create_token(server.master(), Role::Admin, "viewer")
        .await
        .unwrap();
    let letter = neo_ops::backends::queue::Job {
        id: "dead-export-1".into(),
        queue: "export".into(),
        payload: "{}".into(),
        attempts: 2,
        enqueued_at: "2026-11-27T10:00:00Z".into(),
        last_error: Some("smtp server timed out".into()),
        tenant: Some("acme".into()),
        dead_at: Some("2026-11-27T10:05:00Z".into()),
        not_before_ms: None,
    };
    server
        .services
        .kv
        .list_push(
            &neo_ops::backends::queue::dead_letter_key("export"),
            &[serde_json::to_vec(&letter).unwrap()],
        )
        .await
        .unwrap();

    // Reports from a POS page (not from the console): two copies of one
    // violation and one with a very long URL, for the grouped view.
    let long = format!("https://cdn.example.net/{}.js?token=abc", "x".repeat(300));
    // First, a hostile one whose fields are objects a script cannot make a
    // string of: the view must still load.
    let hostile = serde_json::json!({"csp-report": {
        "document-uri": "https://pos.example.com/hostile",
        "blocked-uri": {"toString": 1, "valueOf": 1},
        "effective-directive": {"toString": 1, "valueOf": 1},
    }});
    post_report(&server, hostile).await;
    // Seen strictly before the others (times are kept to the millisecond).
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for blocked in [
        "https://ads.example.com/t.js",
        "https://ads.example.com/t.js",
        &long,
    ] {
        post_report(
            &server,
            serde_json::json!({"csp-report": {
                "document-uri": "https://pos.example.com/orders",
                "blocked-uri": blocked,
                "effective-directive": "script-src-elem",
            }}),
        )
        .await;
    }

    // A wrong token is refused in words, and nothing is kept.
    let s = Session::start(1280, 900, None).await;
    sign_in(&s, &server, "neo_00000000_wrong").await;
    wait_text(&s, "#signin-error", "403 forbidden").await;
    assert_eq!(s.eval("return sessionStorage.length;").await, 0);
    assert_eq!(tabs_display(&s).await, "none", "no tabs while signed out");
    // One pasted with a typographic quote is refused as such, not kept to
    // fail on every reload (fetch cannot send it in a header at all).
    sign_in(&s, &server, "neo_00000000_wrong\u{2019}").await;
    wait_text(&s, "#signin-error", "That is not a token").await;
    assert_eq!(s.eval("return sessionStorage.length;").await, 0);

    // super_admin: search, resend with confirmation, the outcome, the mail.
    sign_in(&s, &server, &root).await;
    wait_text(&s, "#who", "oncall (super_admin)").await;
    search(&s, &order.to_string()).await;
    click(&s, Locator::XPath(&button("Resend invoice"))).await;
    let question = wait_text(&s, "#confirm-text", "tenant acme").await;
    assert!(question.contains(&format!("order {order}")), "{question}");
    // Cancel has the focus: an Enter too many does not confirm.
    assert_eq!(
        s.eval("return document.activeElement.id;").await,
        "confirm-cancel"
    );
    s.screenshot("console-confirm-1280.png").await;
    click(&s, Locator::Id("confirm-ok")).await;
    let outcome = wait_text(&s, "#support-results .outcome", "Done: invoice").await;
    let mails = dep.sent_mail();
    assert_eq!(mails.len(), 1, "the invoice mail reached the SMTP server");
    assert!(
        mails[0].contains("Invoice") || mails[0].contains("invoice"),
        "{}",
        mails[0]
    );
    assert!(outcome.contains("mailed to"), "{outcome}");
    // A second click inside the double-click window does nothing more.
    click(&s, Locator::XPath(&button("Resend invoice"))).await;
    click(&s, Locator::Id("confirm-ok")).await;
    wait_text(&s, "#support-results .outcome", "Already done").await;
    assert_eq!(dep.sent_mail().len(), 1);

    // A webhook replay is summed up by how many deliveries it queued (the
    // demo orders have none to replay from the page).
    let replayed = s.eval("return summarize({deliveries: [12, 13]});").await;
    assert_eq!(replayed, "2 webhook delivery(ies) queued again.");

    // Two searches at once (a double Enter): one set of cards, the latest's.
    s.eval(
        "const f = document.getElementById('support-form'); \
         f.requestSubmit(); f.requestSubmit(); return 1;",
    )
    .await;
    // The status says "Found" only once the latest search has answered
    // (each search starts by saying "Searching…"), its cards shown first.
    wait_text(&s, "#status", "Found tenant acme").await;
    let cards = s
        .eval(
            "return [...document.querySelectorAll('#support-results h3')]\
             .map(h => h.innerText);",
        )
        .await;
    assert_eq!(
        cards,
        serde_json::json!(["Tenant acme", format!("Order {order}")])
    );

    // Audit: the new record and the chain's verdict.
    open(&s, "audit").await;
    wait_text(&s, "#audit-chain", "Chain verified").await;
    let audit = wait_text(&s, "#audit-results", "console.resend_invoice").await;
    assert!(audit.contains("oncall"), "{audit}");

    // Preflight: the failing check first; "Run again" is disabled while a
    // run is out.
    open(&s, "preflight").await;
    let disabled = s
        .eval("const b = document.getElementById('preflight-run'); b.click(); return b.disabled;")
        .await;
    assert_eq!(disabled, true);
    wait_text(&s, "#preflight-results", "test-panic-check").await;
    let first = s
        .eval("return document.querySelector('#preflight-results tbody tr').dataset.status;")
        .await;
    assert_eq!(first, "fail");

    // CSP: grouped by directive and host, copies counted, long URLs clipped
    // with the whole value on hover.
    open(&s, "csp").await;
    wait_text(&s, "#csp-results", "ads.example.com").await;
    let groups = s
        .eval(
            "return [...document.querySelectorAll('#csp-results tbody tr')].map(r => \
             [...r.cells].slice(0, 3).map(c => c.innerText).concat([r.cells[1].title]));",
        )
        .await;
    assert_eq!(
        groups,
        serde_json::json!([
            [
                "script-src-elem",
                "cdn.example.net",
                "1",
                long.replace("abc", "REDACTED")
            ],
            [
                "script-src-elem",
                "ads.example.com",
                "2",
                "https://ads.example.com/t.js"
            ],
            ["", "(none)", "1", ""],
        ]),
        "newest first"
    );

    // Dead letters: replay the export from the page.
    open(&s, "dlq").await;
    click(&s, Locator::Css("[data-dlq=export]")).await;
    wait_text(&s, "#dlq-results", "smtp server timed out").await;
    click(&s, Locator::XPath(&button("Replay"))).await;
    wait_text(&s, "#confirm-text", "dead-export-1").await;
    click(&s, Locator::Id("confirm-ok")).await;
    wait_text(&s, "#dlq-results .outcome", "Requeued.").await;
    let queued = server
        .services
        .kv
        .list_len(&neo_ops::backends::queue::queue_key("export"))
        .await
        .unwrap();
    assert_eq!(queued, 1, "the replayed job is back on its queue");

    let views = [
        ("support", "#support-results", "Order"),
        ("preflight", "#preflight-results", "test-panic-check"),
        ("dlq", "#dlq-results", ""),
        ("csp", "#csp-results", "ads.example.com"),
        ("audit", "#audit-results", "console.resend_invoice"),
    ];
    screenshots(&s, 1280, &views).await;

    // Signing out forgets the token, and leaves the next person nothing of
    // this session's: no tabs, no results, empty forms.
    open(&s, "support").await;
    click(&s, Locator::Id("signout")).await;
    assert_eq!(s.eval("return sessionStorage.length;").await, 0);
    assert_eq!(tabs_display(&s).await, "none");
    let left = s
        .eval(
            "return [document.querySelector('#support-form [name=order]').value, \
             document.getElementById('support-results').childElementCount];",
        )
        .await;
    assert_eq!(left, serde_json::json!(["", 0]));
    s.close().await;

    // The support view on a phone.
    let phone = Session::start(390, 844, None).await;
    sign_in(&phone, &server, &root).await;
    wait_text(&phone, "#who", "oncall (super_admin)").await;
    search(&phone, &order.to_string()).await;
    phone.screenshot("console-support-390.png").await;
    phone.close().await;

    // admin: no support actions in the page (the host refuses them anyway).
    let phone = Session::start(390, 844, None).await;
    sign_in(&phone, &server, &admin).await;
    wait_text(&phone, "#who", "viewer (admin)").await;
    let support_shown = phone
        .eval("return !document.getElementById('tab-support').hidden;")
        .await;
    assert_eq!(support_shown, false);
    assert!(!phone.visible_text().await.contains("Resend invoice"));
    let widths = phone
        .eval("return [window.innerWidth, document.documentElement.scrollWidth];")
        .await;
    assert_eq!(
        widths,
        serde_json::json!([390, 390]),
        "no sideways scrolling"
    );
    screenshots(&phone, 390, &views[1..]).await;
    phone.close().await;

    // The dark system theme gives a dark page.
    let dark = Session::start_dark(1280, 800).await;
    sign_in(&dark, &server, &admin).await;
    wait_text(&dark, "#who", "viewer (admin)").await;
    open(&dark, "audit").await;
    wait_text(&dark, "#audit-results", "console.resend_invoice").await;
    let background = dark
        .eval("return getComputedStyle(document.body).backgroundColor;")
        .await;
    assert_eq!(background, "rgb(21, 24, 28)");
    // The current tab's text is dark on the light accent, readable.
    let tab_text = dark
        .eval("return getComputedStyle(document.querySelector('nav button[aria-current=page]')).color;")
        .await;
    assert_eq!(tab_text, "rgb(11, 18, 32)");
    dark.screenshot("console-audit-1280-dark.png").await;
    // The token revoked meanwhile: the next refusal signs the page out,
    // saying why, and the token is forgotten.
    let id = admin.split('_').nth(1).unwrap();
    assert!(
        neo_ops::auth::revoke_token(server.master(), id)
            .await
            .unwrap()
    );
    open(&dark, "dlq").await;
    wait_text(
        &dark,
        "#signin-error",
        "The token was refused (revoked or expired)",
    )
    .await;
    assert_eq!(dark.eval("return sessionStorage.length;").await, 0);
    assert_eq!(tabs_display(&dark).await, "none");
    dark.close().await;

    // The console's own pages raised no CSP violation: only the four
    // reports posted above are there.
    let (code, body) = server.get("/admin/csp/reports", Some(&root)).await;
    assert_eq!(code, 200, "{body}");
    let reports: Json = serde_json::from_str(&body).unwrap();
    let reports = reports["data"]["reports"].as_array().unwrap();
    let counts: Vec<(&str, u64)> = reports
        .iter()
        .map(|r| {
            (
                r["report"]["csp-report"]["document-uri"]
                    .as_str()
                    .unwrap_or(""),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("https://pos.example.com/orders", 1),
            ("https://pos.example.com/orders", 2),
            ("https://pos.example.com/hostile", 1)
        ],
        "{body}"
    );
    server.stop().await.unwrap();
}

/// How the view tabs are laid out: "none" while they must not show.
async fn tabs_display(s: &Session) -> Json {
    s.eval("return getComputedStyle(document.getElementById('tabs')).display;")
        .await
}

/// Posts one CSP report the way a browser does; the route answers 204.
async fn post_report(server: &Server, report: Json) {
    let resp = server
        .http
        .post(server.url("/csp/report"))
        .header("content-type", "application/csp-report")
        .body(report.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
}

/// The sign-in form without its script (a script that did not load) sends
/// no token in a URL; a master blip does not sign the operator out (the
/// host's token copy vouches for the token), a token the copy does not
/// hold yet cannot be checked and is kept, and a view whose reload fails
/// shows the failure, not the old verdict. Two loads of a view out at
/// once: the older answer, landing last, does not show. An injected script
/// does not run, and no script is served as a service worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_through_a_master_blip() {
    let dep = Deployment::new(Backend::Real).await;
    let (server, pg) = dep.start_with_master_proxy(PLUGINS).await;
    let root = neo_ops::auth::create_token(server.master(), Role::SuperAdmin, "oncall")
        .await
        .unwrap();
    let s = Session::start(1280, 900, None).await;

    // Submitted past the script, the form carries no token.
    s.client.goto(&server.url("/admin/")).await.unwrap();
    let field = s.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys(&root).await.unwrap();
    s.eval("document.getElementById('signin-form').submit(); return 1;")
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = s.client.current_url().await.unwrap().to_string();
    assert!(
        !url.contains(&root[13..]) && !url.contains("token="),
        "{url}"
    );

    sign_in(&s, &server, &root).await;
    wait_text(&s, "#who", "oncall (super_admin)").await;
    // Where the token lives the policy is enforced: a script put into the
    // page does not run.
    let ran = s
        .eval(
            "const tag = document.createElement('script');
             tag.textContent = 'window.injected = true;';
             document.head.append(tag);
             return window.injected === true;",
        )
        .await;
    assert_eq!(ran, false, "an injected inline script ran");
    // Nor is any script served to be a service worker, which would see
    // every request of the origin.
    let worker = server
        .http
        .get(server.url("/admin/console.js"))
        .header("service-worker", "script")
        .send()
        .await
        .unwrap();
    assert_eq!(worker.status().as_u16(), 403);
    open(&s, "audit").await;
    wait_text(&s, "#audit-chain", "Chain verified").await;
    // Made now and never shown to the host: its copy does not hold it.
    let late = neo_ops::auth::create_token(server.master(), Role::Admin, "late")
        .await
        .unwrap();

    // The master goes away: the audit view says it could not check, and
    // keeps no green verdict from before.
    pg.set_up(false);
    open(&s, "audit").await;
    wait_text(&s, "#audit-chain", "Not checked").await;
    assert_eq!(
        s.eval("return document.getElementById('audit-chain').className;")
            .await,
        "fail"
    );
    // A reload meanwhile signs in: the host's copy vouches for the token.
    s.client.goto(&server.url("/admin/")).await.unwrap();
    wait_text(&s, "#who", "oncall (super_admin)").await;
    // One the copy does not hold cannot be checked, and is kept.
    let keep = format!("sessionStorage.setItem(\"neo-ops-token\", {late:?}); return 1;");
    s.eval(&keep).await;
    s.client.goto(&server.url("/admin/")).await.unwrap();
    wait_text(&s, "#signin-error", "Could not check the token").await;
    assert_eq!(s.eval("return sessionStorage.length;").await, 1);

    // Back: a reload signs in again with nothing typed.
    pg.set_up(true);
    let back = Instant::now();
    loop {
        s.client.goto(&server.url("/admin/")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let who = s
            .eval("return document.getElementById('who').innerText;")
            .await;
        if who == "late (admin)" {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "never signed in again: {who}"
        );
    }

    // Two loads of a view out at once, the older answered last: the newer
    // answer stays. The page's first CSP answer is held 1.5 s; a report
    // arrives between the two loads.
    s.eval(
        "const real = window.fetch; let held = 0;
         window.fetch = async (...args) => {
           const resp = await real(...args);
           if (String(args[0]).startsWith('/admin/csp/reports') && held++ === 0)
             await new Promise((ok) => setTimeout(ok, 1500));
           return resp;
         };
         return 1;",
    )
    .await;
    open(&s, "csp").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    post_report(
        &server,
        serde_json::json!({"csp-report": {
            "document-uri": "https://pos.example.com/late",
            "effective-directive": "img-src",
            "blocked-uri": "https://tracker.example.net/pixel.gif",
        }}),
    )
    .await;
    open(&s, "csp").await;
    wait_text(&s, "#csp-results", "tracker.example.net").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shown = s
        .eval("return document.getElementById('csp-results').innerText;")
        .await;
    assert!(
        shown
            .as_str()
            .unwrap_or_default()
            .contains("tracker.example.net"),
        "the older answer showed over the newer: {shown}"
    );
    s.close().await;
    server.stop().await.unwrap();
}
