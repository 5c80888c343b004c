//! What a run produces for people: the alert email (plain text and a simple
//! HTML table) and the command output (text or JSON). Pure: no host calls.

use crate::reconcile::{Row, Summary};
use neo_ops_sdk::html::escape;
use serde_json::{Value, json};

/// Flagged and skipped rows shown in the command output (the email has more).
pub const OUTPUT_ROWS: usize = 20;

/// What happened about the email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mail {
    /// Nothing crossed the threshold.
    NotNeeded,
    /// `--dry-run`: it would have gone to these addresses.
    DryRun {
        to: Vec<String>,
    },
    Sent {
        to: Vec<String>,
        message_id: String,
    },
    /// Written to the host's outbox (no SMTP relay set): no one got it.
    Outbox {
        to: Vec<String>,
        message_id: String,
    },
}

pub fn subject(s: &Summary, source: &str) -> String {
    format!(
        "Stock vs KOT: {} {} over variance threshold {} in {source}",
        s.flagged,
        plural(s.flagged, "row", "rows"),
        s.threshold
    )
}

/// The email's plain text: the flagged rows largest difference first, in
/// words a kitchen manager reads, then the rows that could not be read by
/// line number. `name` is the file's name, never the server's path.
pub fn email_text(s: &Summary, name: &str) -> String {
    let mut out = email_intro(s, name);
    out.push_str("\n\n");
    for r in &s.flagged_rows {
        out.push_str(&format!(
            "- {} (line {}): sold {}, on KOTs {}, variance {}\n",
            r.item, r.line, r.sold_qty, r.kot_cnt, r.variance
        ));
    }
    if s.flagged_not_kept() > 0 {
        out.push_str(&format!(
            "- ... and {} more rows over the threshold, none with a larger difference\n",
            s.flagged_not_kept()
        ));
    }
    out.push_str(&invalid_rows(s));
    out
}

/// `3 of 6 readable rows in report.csv differ by more than 5 …`: the total
/// counts only rows that could be read.
fn email_intro(s: &Summary, name: &str) -> String {
    let readable = s.rows_read - s.skipped;
    format!(
        "{} of {} readable {} in {name} {} by more than {} between items sold and \
         kitchen order tickets (KOTs), largest difference first:",
        s.flagged,
        readable,
        plural(readable, "row", "rows"),
        plural(s.flagged, "differs", "differ"),
        s.threshold
    )
}

/// The rows left out, by line number: the first [`LISTED_SKIPS`], then a count.
fn invalid_rows(s: &Summary) -> String {
    if s.skipped == 0 {
        return String::new();
    }
    let mut out = format!(
        "\n{} {} could not be read and {} left out:\n",
        s.skipped,
        plural(s.skipped, "row", "rows"),
        plural(s.skipped, "was", "were")
    );
    for k in &s.skips {
        out.push_str(&format!("- line {}: {}\n", k.line, k.reason));
    }
    if s.skips_not_listed() > 0 {
        out.push_str(&format!("- ... and {} more\n", s.skips_not_listed()));
    }
    out
}

pub fn email_html(s: &Summary, name: &str) -> String {
    let mut out = format!(
        "<p>{}</p>\n\
         <table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n\
         <tr><th>Line</th><th>Item</th><th>Sold</th><th>On KOTs</th><th>Variance</th></tr>\n",
        escape(&email_intro(s, name)),
    );
    for r in &s.flagged_rows {
        out.push_str(&html_row(r));
    }
    out.push_str("</table>\n");
    if s.flagged_not_kept() > 0 {
        out.push_str(&format!(
            "<p>... and {} more rows over the threshold, none with a larger difference.</p>\n",
            s.flagged_not_kept()
        ));
    }
    let invalid = invalid_rows(s);
    if !invalid.is_empty() {
        let mut lines = invalid.trim().lines();
        out.push_str(&format!(
            "<p>{}</p>\n<ul>\n",
            escape(lines.next().unwrap_or_default())
        ));
        for line in lines {
            let item = line.strip_prefix("- ").unwrap_or(line);
            out.push_str(&format!("<li>{}</li>\n", escape(item)));
        }
        out.push_str("</ul>\n");
    }
    out
}

fn html_row(r: &Row) -> String {
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        r.line,
        escape(&r.item),
        r.sold_qty,
        r.kot_cnt,
        r.variance
    )
}

/// The command's plain-text output.
pub fn text_output(s: &Summary, source: &str, mail: &Mail) -> String {
    let mut out = format!(
        "{source}: {} rows read, {} skipped, {} flagged (|variance| > {})\n",
        s.rows_read, s.skipped, s.flagged, s.threshold
    );
    if s.flagged > 0 {
        out.push_str("flagged:\n");
        for r in s.flagged_rows.iter().take(OUTPUT_ROWS) {
            out.push_str(&format!(
                "  line {}: {} (sold_qty {}, KOT_cnt {}, variance {})\n",
                r.line, r.item, r.sold_qty, r.kot_cnt, r.variance
            ));
        }
        more(
            &mut out,
            s.flagged - s.flagged.min(OUTPUT_ROWS as u64),
            "flagged",
        );
    }
    if s.skipped > 0 {
        out.push_str("skipped:\n");
        for k in &s.skips {
            out.push_str(&format!("  warning: line {}: {}\n", k.line, k.reason));
        }
        more(&mut out, s.skips_not_listed(), "skipped");
    }
    out.push_str(&mail_line(mail));
    out
}

fn more(out: &mut String, n: u64, what: &str) {
    if n > 0 {
        out.push_str(&format!("  ... and {n} more {what} rows not listed\n"));
    }
}

fn mail_line(mail: &Mail) -> String {
    match mail {
        Mail::NotNeeded => "nothing over the threshold: no email sent\n".into(),
        Mail::DryRun { to } => format!("dry run: would have emailed {}\n", to.join(", ")),
        Mail::Sent { to, message_id } => {
            format!("emailed {} (message id {message_id})\n", to.join(", "))
        }
        Mail::Outbox { to, message_id } => format!(
            "NOT emailed: SMTP_HOST is not set, so the mail to {} is only in the outbox \
             (message id {message_id})\n",
            to.join(", ")
        ),
    }
}

/// The command's `--json` output (the `data` of the `ok` envelope).
pub fn json_output(s: &Summary, source: &str, mail: &Mail) -> Value {
    let flagged: Vec<Value> = s
        .flagged_rows
        .iter()
        .take(OUTPUT_ROWS)
        .map(|r| {
            json!({"line": r.line, "item": r.item, "sold_qty": r.sold_qty,
                   "KOT_cnt": r.kot_cnt, "variance": r.variance})
        })
        .collect();
    let skips: Vec<Value> = s
        .skips
        .iter()
        .map(|k| json!({"line": k.line, "reason": k.reason}))
        .collect();
    json!({
        "csv": source,
        "threshold": s.threshold,
        "rows_read": s.rows_read,
        "skipped": s.skipped,
        "flagged": s.flagged,
        "flagged_rows": flagged,
        "warnings": skips,
        "warnings_not_listed": s.skips_not_listed(),
        "email": mail_json(mail),
    })
}

fn mail_json(mail: &Mail) -> Value {
    match mail {
        Mail::NotNeeded => json!({"sent": false}),
        Mail::DryRun { to } => json!({"sent": false, "dry_run": true, "to": to}),
        Mail::Sent { to, message_id } => json!({"sent": true, "to": to, "message_id": message_id}),
        Mail::Outbox { to, message_id } => {
            json!({"sent": false, "outbox": true, "to": to, "message_id": message_id})
        }
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::{Observer, reconcile};

    struct Quiet;
    impl Observer for Quiet {}

    fn summary() -> Summary {
        let csv =
            "item,sold_qty,KOT_cnt,variance\n\"<Dal> & \"\"Naan\"\"\",10,2,8\nok,1,1,0\nbad\n";
        reconcile(csv.as_bytes(), 5.0, &mut Quiet).unwrap()
    }

    #[test]
    fn email_lists_flagged_rows_largest_first_escaped_in_html() {
        let csv = "item,sold_qty,KOT_cnt,variance\n\"<Dal> & \"\"Naan\"\"\",10,2,8\n\
                   ok,1,1,0\nbad\nRice,1,20,-19\n";
        let s = reconcile(csv.as_bytes(), 5.0, &mut Quiet).unwrap();
        let text = email_text(&s, "r.csv");
        assert!(
            text.starts_with(
                "2 of 3 readable rows in r.csv differ by more than 5 between items sold and \
                 kitchen order tickets (KOTs), largest difference first:\n\n\
                 - Rice (line 5): sold 1, on KOTs 20, variance -19\n\
                 - <Dal> & \"Naan\" (line 2): sold 10, on KOTs 2, variance 8\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\n1 row could not be read and was left out:\n\
                 - line 4: expected 4 fields, found 1\n"
            ),
            "{text}"
        );
        let html = email_html(&s, "r.csv");
        assert!(
            html.contains("<td>&lt;Dal&gt; &amp; &quot;Naan&quot;</td>"),
            "{html}"
        );
        assert!(
            html.contains("<li>line 4: expected 4 fields, found 1</li>"),
            "{html}"
        );
        assert_eq!(html.matches("<tr>").count(), 3);
        assert_eq!(
            subject(&s, "r.csv"),
            "Stock vs KOT: 2 rows over variance threshold 5 in r.csv"
        );
    }

    #[test]
    fn invalid_rows_past_twenty_are_counted() {
        let mut csv = String::from("item,sold_qty,KOT_cnt,variance\nDal,10,2,8\n");
        for _ in 0..25 {
            csv.push_str("bad\n");
        }
        let s = reconcile(csv.as_bytes(), 5.0, &mut Quiet).unwrap();
        let text = email_text(&s, "r.csv");
        assert!(
            text.starts_with("1 of 1 readable row in r.csv differs"),
            "{text}"
        );
        assert_eq!(text.matches("expected 4 fields").count(), 20, "{text}");
        assert!(text.ends_with("- ... and 5 more\n"), "{text}");
    }

    #[test]
    fn outputs_carry_counts_and_warnings() {
        let s = summary();
        let text = text_output(&s, "r.csv", &Mail::NotNeeded);
        assert!(text.starts_with("r.csv: 3 rows read, 1 skipped, 1 flagged (|variance| > 5)\n"));
        assert!(text.contains("  warning: line 4: expected 4 fields, found 1\n"));
        let j = json_output(
            &s,
            "r.csv",
            &Mail::DryRun {
                to: vec!["a@b.c".into()],
            },
        );
        assert_eq!(
            (j["rows_read"].as_u64(), j["skipped"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(j["warnings"][0]["line"], 4);
        assert_eq!(j["email"]["dry_run"], true);
    }
}
