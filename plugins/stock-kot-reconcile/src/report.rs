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
}

pub fn subject(s: &Summary, source: &str) -> String {
    format!(
        "Stock vs KOT: {} {} over variance threshold {} in {source}",
        s.flagged,
        plural(s.flagged, "row", "rows"),
        s.threshold
    )
}

pub fn email_text(s: &Summary, source: &str) -> String {
    let mut out = format!(
        "{} of {} rows in {source} have an absolute variance above {}.\n\n",
        s.flagged, s.rows_read, s.threshold
    );
    for r in &s.flagged_rows {
        out.push_str(&format!(
            "- {} (line {}): sold_qty {}, KOT_cnt {}, variance {}\n",
            r.item, r.line, r.sold_qty, r.kot_cnt, r.variance
        ));
    }
    out.push_str(&email_footer(s));
    out
}

pub fn email_html(s: &Summary, source: &str) -> String {
    let mut out = format!(
        "<p>{} of {} rows in {} have an absolute variance above {}.</p>\n\
         <table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n\
         <tr><th>Line</th><th>Item</th><th>sold_qty</th><th>KOT_cnt</th><th>variance</th></tr>\n",
        s.flagged,
        s.rows_read,
        escape(source),
        s.threshold
    );
    for r in &s.flagged_rows {
        out.push_str(&html_row(r));
    }
    out.push_str("</table>\n");
    let footer = email_footer(s);
    if !footer.is_empty() {
        out.push_str(&format!(
            "<p>{}</p>\n",
            escape(footer.trim()).replace('\n', "<br>\n")
        ));
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

/// Rows not listed, and rows skipped, so the reader knows the list is partial.
fn email_footer(s: &Summary) -> String {
    let mut out = String::new();
    if s.flagged_not_kept() > 0 {
        out.push_str(&format!(
            "\n... and {} more flagged rows not listed here.\n",
            s.flagged_not_kept()
        ));
    }
    if s.skipped > 0 {
        out.push_str(&format!(
            "\n{} invalid {} skipped (see the command output or logs).\n",
            s.skipped,
            plural(s.skipped, "row was", "rows were")
        ));
    }
    out
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
    fn email_lists_flagged_rows_escaped_in_html() {
        let s = summary();
        let text = email_text(&s, "r.csv");
        assert!(text.starts_with("1 of 3 rows in r.csv have an absolute variance above 5."));
        assert!(text.contains("- <Dal> & \"Naan\" (line 2): sold_qty 10, KOT_cnt 2, variance 8\n"));
        assert!(text.contains("1 invalid row was skipped"));
        let html = email_html(&s, "r.csv");
        assert!(
            html.contains("<td>&lt;Dal&gt; &amp; &quot;Naan&quot;</td>"),
            "{html}"
        );
        assert_eq!(html.matches("<tr>").count(), 2);
        assert_eq!(
            subject(&s, "r.csv"),
            "Stock vs KOT: 1 row over variance threshold 5 in r.csv"
        );
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
