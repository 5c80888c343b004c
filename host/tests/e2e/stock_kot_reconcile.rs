//! Stock vs KOT reconciliation (spec "Stock vs KOT Reconciliation"): the real
//! plugin, under the manifest block shipped in `plugins.toml`, reading CSV
//! files through the host's `files` capability and mailing the ops address
//! (real SMTP server, or the `.eml` outbox on the embedded backend).

use crate::support;

use base64::Engine;
use neo_ops::runtime::{InvokeError, Trigger};
use serde_json::Value as Json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::{Backend, Deployment, Server};

const PLUGIN: &str = "stock-kot-reconcile";

/// The plugin's block from the repository's `plugins.toml`, so the tests run
/// with the grants and limits that ship; `extra` lines are added to it.
fn manifest(extra: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins.toml"))
        .expect("plugins.toml");
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "[plugins.stock-kot-reconcile]");
    let header = lines
        .next()
        .expect("plugins.toml has a stock-kot-reconcile block");
    let body: Vec<&str> = lines
        .take_while(|l| !l.trim_start().starts_with('['))
        .collect();
    format!("{header}\n{}\n{extra}\n", body.join("\n"))
}

fn write_csv(dep: &Deployment, name: &str, text: &str) -> String {
    let path: PathBuf = dep.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

async fn run(server: &Server, args: &[&str]) -> Result<String, (u16, String)> {
    server.command(PLUGIN, args).await.map_err(|e| match e {
        InvokeError::Failed { status, message } => (status, message),
        other => panic!("plugin failed outside its own error path: {other}"),
    })
}

async fn run_json(server: &Server, args: &[&str]) -> Json {
    let mut args = args.to_vec();
    args.push("--json");
    let out = run(server, &args).await.expect("run succeeds");
    let body: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(body["ok"], true, "{body}");
    body["data"].clone()
}

/// A sent message, decoded: headers unfolded, parts un-transfer-encoded.
struct Mail {
    headers: String,
    text: String,
    html: String,
}

fn decode_mail(raw: &str) -> Mail {
    let raw = raw.replace("\r\n", "\n");
    let (headers, _) = raw.split_once("\n\n").expect("headers and body");
    let headers = headers.replace("\n ", " ").replace("\n\t", " ");
    let boundary = headers
        .split("boundary=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a multipart message");
    let (mut text, mut html) = (String::new(), String::new());
    for part in raw.split(&format!("--{boundary}")).skip(1) {
        let Some((head, body)) = part.trim_start_matches('\n').split_once("\n\n") else {
            continue;
        };
        let head = head.to_ascii_lowercase();
        let decoded = decode_body(&head, body);
        if head.contains("content-type: text/plain") {
            text = decoded;
        } else if head.contains("content-type: text/html") {
            html = decoded;
        }
    }
    Mail {
        headers,
        text,
        html,
    }
}

fn decode_body(head: &str, body: &str) -> String {
    if head.contains("content-transfer-encoding: base64") {
        let compact: String = body.split_whitespace().collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .unwrap();
        String::from_utf8(bytes).unwrap()
    } else if head.contains("content-transfer-encoding: quoted-printable") {
        quoted_printable(body)
    } else {
        body.to_string()
    }
}

fn quoted_printable(body: &str) -> String {
    let joined = body.replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// `(item, line)` of each row the email's text lists (`- item (line N): …`).
fn listed_rows(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("- "))
        // Not the rows left out (`- line N: …`) or the count of the rest.
        .filter(|l| !l.starts_with("line ") && !l.starts_with("..."))
        .map(|l| {
            let (item, rest) = l.rsplit_once(" (line ").unwrap();
            let line = rest.split_once(')').unwrap().0.parse().unwrap();
            (item.to_string(), line)
        })
        .collect()
}

// Reordered columns, extra columns, quoted items, bad rows and a blank line.
const REPORT: &str = "note,variance,item,KOT_cnt,sold_qty,extra\n\
a,7,Paneer Tikka,3,10,x\n\
b,5,Dal Makhani,5,10,x\n\
c,-5.5,\"Butter Chicken, half\",15.5,10,x\n\
d,-12,\"Masala \"\"Special\"\" Dosa\",20,8,x\n\
e,abc,Jeera Rice,1,2,x\n\
f,9,Gulab Jamun,1\n\
\n\
g,,Lassi,1,1,x\n\
h,0,Plain Naan,4,4,x\n\
i,100,,1,1,x\n\
j,-5,Raita,10,5,x\n";

async fn flags_rows_over_the_threshold(backend: Backend) {
    let dep = Deployment::with_smtp(backend).await;
    let extra = r#"config    = { ops_email = "kitchen-ops@example.com, gm@example.com" }"#;
    let server = dep.start(&manifest(extra), "a").await;
    let csv = write_csv(&dep, "report.csv", REPORT);

    let data = run_json(&server, &["--csv", &csv, "--threshold", "5"]).await;
    let counts = (&data["rows_read"], &data["skipped"], &data["flagged"]);
    assert_eq!(counts, (&10.into(), &4.into(), &3.into()), "{data}");
    let warnings: Vec<(u64, &str)> = data["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["line"].as_u64().unwrap(), w["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        warnings,
        vec![
            (6, "non-numeric variance \"abc\""),
            (7, "expected 6 fields, found 4"),
            (9, "missing variance"),
            (11, "missing item"),
        ]
    );
    assert_eq!(data["email"]["sent"], true, "{data}");

    // Exactly one email, to the configured addresses, listing exactly the
    // rows strictly above the threshold (5 and -5 are not).
    let sent = dep.sent_mail();
    assert_eq!(sent.len(), 1);
    let mail = decode_mail(&sent[0]);
    assert!(
        mail.headers
            .contains("To: kitchen-ops@example.com, gm@example.com"),
        "{}",
        mail.headers
    );
    assert!(
        mail.headers
            .contains("Subject: Stock vs KOT: 3 rows over variance threshold 5 in report.csv")
    );
    // Largest difference first; the total counts readable rows only; the
    // rows left out are named by line; the server's path appears nowhere.
    let expected = vec![
        ("Masala \"Special\" Dosa".to_string(), 5),
        ("Paneer Tikka".to_string(), 2),
        ("Butter Chicken, half".to_string(), 4),
    ];
    assert_eq!(listed_rows(&mail.text), expected, "{}", mail.text);
    assert!(
        mail.text.starts_with(
            "3 of 6 readable rows in report.csv differ by more than 5 between items sold \
             and kitchen order tickets (KOTs), largest difference first:"
        ),
        "{}",
        mail.text
    );
    assert!(mail.text.contains("sold 8, on KOTs 20, variance -12"));
    assert!(
        mail.text.contains(
            "4 rows could not be read and were left out:\n\
             - line 6: non-numeric variance \"abc\"\n\
             - line 7: expected 6 fields, found 4\n\
             - line 9: missing variance\n\
             - line 11: missing item\n"
        ),
        "{}",
        mail.text
    );
    let dir = std::path::Path::new(&csv)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    for body in [&mail.text, &mail.html, &mail.headers] {
        assert!(!body.contains(dir), "the server's path leaked: {body}");
        assert!(
            !body.contains("logs"),
            "readers cannot see the logs: {body}"
        );
    }
    assert!(mail.html.contains("<th>Sold</th><th>On KOTs</th>"));
    assert_eq!(mail.html.matches("<tr>").count(), 4, "{}", mail.html);
    assert!(
        mail.html
            .contains("<td>Masala &quot;Special&quot; Dosa</td>")
    );
    for not_flagged in ["Dal Makhani", "Plain Naan", "Raita", "Gulab Jamun", "Lassi"] {
        assert!(!mail.text.contains(not_flagged) && !mail.html.contains(not_flagged));
    }

    // The text output says the same, with a warning line per bad row;
    // `--dry-run` sends nothing more.
    let out = run(
        &server,
        &["--csv", &csv, "--threshold=5", "--verbose", "--dry-run"],
    )
    .await
    .unwrap();
    assert!(
        out.contains(": 10 rows read, 4 skipped, 3 flagged (|variance| > 5)\n"),
        "{out}"
    );
    for line in [
        "  warning: line 6: non-numeric variance \"abc\"\n",
        "  warning: line 7: expected 6 fields, found 4\n",
        "  warning: line 9: missing variance\n",
        "  warning: line 11: missing item\n",
        "  line 4: Butter Chicken, half (sold_qty 10, KOT_cnt 15.5, variance -5.5)\n",
        "dry run: would have emailed kitchen-ops@example.com, gm@example.com\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert_eq!(dep.sent_mail().len(), 1, "a dry run sends nothing");
    server.stop().await.unwrap();
}

on_both_backends!(flags_and_warns, flags_rows_over_the_threshold);

async fn bad_input_is_refused(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(""), "a").await;
    let no_kot = write_csv(&dep, "no_kot.csv", "item,sold_qty,variance\nPaneer,10,50\n");
    let (status, message) = run(&server, &["--csv", &no_kot, "--threshold", "5"])
        .await
        .unwrap_err();
    assert_eq!(status, 400);
    assert!(
        message.contains("missing required column \"KOT_cnt\""),
        "{message}"
    );

    let empty = write_csv(&dep, "empty.csv", "");
    let (status, message) = run(&server, &["--csv", &empty, "--threshold", "5"])
        .await
        .unwrap_err();
    assert_eq!(
        (status, message.contains("empty")),
        (400, true),
        "{message}"
    );

    let good = write_csv(
        &dep,
        "good.csv",
        "item,sold_qty,KOT_cnt,variance\nDal,1,9,-8\n",
    );
    for bad in ["-1", "abc", "NaN"] {
        let (status, message) = run(&server, &["--csv", &good, "--threshold", bad])
            .await
            .unwrap_err();
        assert_eq!(status, 400);
        assert!(
            message.contains(&format!("invalid threshold \"{bad}\"")) && message.contains("usage:"),
            "{message}"
        );
    }
    let (status, message) = run(&server, &["--threshold", "5"]).await.unwrap_err();
    assert_eq!((status, message.contains("missing --csv")), (400, true));
    let (status, message) = run(&server, &["--csv", &good]).await.unwrap_err();
    assert_eq!(
        (status, message.contains("missing --threshold")),
        (400, true)
    );
    let (status, message) = run(&server, &["--csv", &good, "--treshold", "5"])
        .await
        .unwrap_err();
    assert_eq!(status, 400);
    assert!(message.contains("unknown flag \"--treshold\""), "{message}");

    // Every row skipped: nothing was checked, so no clean report. A byte
    // order mark before a quoted header is not one of the reasons.
    let unreadable = write_csv(
        &dep,
        "trailing.csv",
        "\u{feff}\"item\",\"sold_qty\",\"KOT_cnt\",\"variance\"\r\nDal,10,2,8,\r\nNaan,4,4,0,\r\n",
    );
    let (status, message) = run(&server, &["--csv", &unreadable, "--threshold", "5"])
        .await
        .unwrap_err();
    assert_eq!(status, 400);
    assert!(
        message.ends_with(
            "trailing.csv: every one of the 2 rows was skipped as invalid \
             (line 2: expected 4 fields, found 5); nothing was checked"
        ),
        "{message}"
    );

    let gone = dep.dir.path().join("gone.csv");
    let (status, _) = run(
        &server,
        &["--csv", gone.to_str().unwrap(), "--threshold", "5"],
    )
    .await
    .unwrap_err();
    assert_eq!(status, 404);
    assert!(dep.sent_mail().is_empty(), "no run above may send mail");
    server.stop().await.unwrap();
}

on_both_backends!(bad_input, bad_input_is_refused);

/// With no SMTP relay the mail only reaches the outbox: the run says so
/// rather than "emailed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_left_in_the_outbox_is_not_called_emailed() {
    let dep = Deployment::new(Backend::Embedded).await;
    let server = dep.start(&manifest(""), "a").await;
    let csv = write_csv(
        &dep,
        "one.csv",
        "item,sold_qty,KOT_cnt,variance\nDal,1,9,-8\n",
    );
    let data = run_json(&server, &["--csv", &csv, "--threshold", "5"]).await;
    assert_eq!(data["email"]["sent"], false, "{data}");
    assert_eq!(data["email"]["outbox"], true, "{data}");
    let out = run(&server, &["--csv", &csv, "--threshold", "5"])
        .await
        .unwrap();
    assert!(
        out.contains("NOT emailed: SMTP_HOST is not set, so the mail to ops@example.com is only in the outbox"),
        "{out}"
    );
    assert_eq!(dep.sent_mail().len(), 2, "both runs wrote to the outbox");
    server.stop().await.unwrap();
}

async fn nothing_over_the_threshold_sends_nothing(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(""), "a").await;
    let csv = write_csv(
        &dep,
        "calm.csv",
        "item,sold_qty,KOT_cnt,variance\r\nDal,10,5,5\r\nNaan,10,15,-5\r\nRice,3,3,0\r\nbroken\r\n",
    );
    let out = run(&server, &["--csv", &csv, "--threshold", "5"])
        .await
        .unwrap();
    assert!(
        out.contains(": 4 rows read, 1 skipped, 0 flagged (|variance| > 5)\n"),
        "{out}"
    );
    assert!(
        out.contains("  warning: line 5: expected 4 fields, found 1\n"),
        "{out}"
    );
    assert!(out.contains("no email sent"), "{out}");
    assert!(!out.contains("flagged:"), "{out}");

    // Zero is a valid threshold, and a zero variance is not above it.
    let data = run_json(&server, &["--csv", &csv, "--threshold", "0"]).await;
    assert_eq!(data["flagged"], 2, "{data}");
    let zero = write_csv(
        &dep,
        "zero.csv",
        "item,sold_qty,KOT_cnt,variance\nRice,3,3,0\n",
    );
    let data = run_json(&server, &["--csv", &zero, "--threshold", "0"]).await;
    assert_eq!(
        (&data["flagged"], &data["email"]["sent"]),
        (&0.into(), &false.into())
    );
    assert_eq!(
        dep.sent_mail().len(),
        1,
        "only the threshold-0 run over calm.csv mails"
    );
    server.stop().await.unwrap();
}

on_both_backends!(no_email, nothing_over_the_threshold_sends_nothing);

/// The plugin reads files only through the manifest's `arg:--csv` grant: the
/// grant covers exactly the `--csv` path of this invocation, and without the
/// grant the same run is denied before anything is read or sent. (The plugin
/// only ever opens the `--csv` path, so a read of some other path cannot be
/// triggered from the command line; the resolution below is what the host
/// checks every read against.)
async fn reads_only_the_granted_file(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let report = write_csv(&dep, "report.csv", REPORT);
    let other = write_csv(&dep, "other.csv", REPORT);

    let args: Vec<String> = ["--csv", &report, "--threshold", "5", "--verbose"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let grants = ["arg:--csv".to_string()];
    let granted = neo_ops::runtime::file_grants::resolve_grants(
        &grants,
        Some(&Trigger::Command(args)),
        std::path::Path::new("/unused"),
    );
    assert_eq!(granted, vec![PathBuf::from(&report)]);
    assert!(!granted.contains(&PathBuf::from(&other)));

    let no_grant = manifest("").replace(r#"files = ["arg:--csv"], "#, "");
    assert!(!no_grant.contains("files"), "{no_grant}");
    let server = dep.start(&no_grant, "a").await;
    let (status, message) = run(&server, &["--csv", &report, "--threshold", "5"])
        .await
        .unwrap_err();
    assert_eq!(status, 403);
    assert!(message.contains("no file grant"), "{message}");
    assert!(dep.sent_mail().is_empty());
    server.stop().await.unwrap();

    // With the shipped grant, `--csv=PATH` names the file just as well.
    let server = dep.start(&manifest(""), "a").await;
    let arg = format!("--csv={other}");
    let data = run_json(&server, &[&arg, "--threshold", "5"]).await;
    assert_eq!(data["flagged"], 3, "{data}");
    server.stop().await.unwrap();
}

on_both_backends!(file_grant, reads_only_the_granted_file);

/// 200,000 rows stream through in bounded memory (the shipped 32 MiB limit):
/// exact counts, the first 20 warnings listed, the email capped at 1000 rows.
async fn large_file_streams(backend: Backend) {
    let dep = Deployment::new(backend).await;
    let server = dep.start(&manifest(""), "a").await;
    const ROWS: usize = 200_000;
    let (mut csv, mut bad, mut flagged) = (String::from("item,sold_qty,KOT_cnt,variance\n"), 0, 0);
    for i in 0..ROWS {
        if i % 8000 == 7 {
            csv.push_str(&format!("item {i},{i},oops,1\n"));
            bad += 1;
        } else if i % 150 == 0 {
            let v = if i % 300 == 0 { 6 } else { -6 };
            csv.push_str(&format!("item {i},20,{},{v}\n", 20 - v));
            flagged += 1;
        } else {
            let v = (i % 11) as i64 - 5;
            csv.push_str(&format!("item {i},20,{},{v}\n", 20 - v));
        }
    }
    let path = write_csv(&dep, "big.csv", &csv);

    let started = Instant::now();
    let data = run_json(&server, &["--csv", &path, "--threshold", "5"]).await;
    let elapsed = started.elapsed();
    assert_eq!(data["rows_read"], ROWS, "{data}");
    assert_eq!(
        (data["skipped"].as_u64(), data["flagged"].as_u64()),
        (Some(bad), Some(flagged))
    );
    assert_eq!((bad, flagged), (25, 1334));
    assert_eq!(data["warnings"].as_array().unwrap().len(), 20);
    assert_eq!(data["warnings"][0]["line"], 9, "row 7 is on line 9");
    assert_eq!(
        data["warnings"][0]["reason"],
        "non-numeric KOT_cnt \"oops\""
    );
    assert_eq!(data["warnings_not_listed"], 5);
    assert_eq!(data["flagged_rows"].as_array().unwrap().len(), 20);
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");

    let sent = dep.sent_mail();
    assert_eq!(sent.len(), 1);
    let mail = decode_mail(&sent[0]);
    assert!(
        mail.headers.contains("To: ops@example.com"),
        "{}",
        mail.headers
    );
    let rows = listed_rows(&mail.text);
    assert_eq!(rows.len(), 1000);
    assert_eq!(rows[0], ("item 0".to_string(), 2));
    assert_eq!(rows[999], ("item 149850".to_string(), 149_852));
    assert!(
        mail.text.contains(
            "- ... and 334 more rows over the threshold, none with a larger difference\n"
        )
    );
    assert_eq!(mail.html.matches("<tr>").count(), 1001);
    server.stop().await.unwrap();
}

on_both_backends!(large_file, large_file_streams);
