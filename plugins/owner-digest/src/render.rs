//! The digest email, as plain text and HTML. Both stay ASCII with short lines
//! (the rupee sign is an HTML entity) so the mail goes out as readable 7bit.

use crate::figures::Digest;
use chrono::NaiveDate;
use neo_ops_sdk::html::escape;

/// What the email is about.
pub struct Heading<'a> {
    pub tenant: &'a str,
    pub display_name: &'a str,
    pub day: NaiveDate,
    /// Local `HH:MM` the figures stop at, when the day is not over.
    pub until: Option<&'a str>,
    pub zone: &'a str,
}

impl Heading<'_> {
    /// `Tue 02 Dec 2026 (Asia/Kolkata)`, with `until 20:00` for a day not over.
    fn business_day(&self) -> String {
        let day = self.day.format("%a %d %b %Y");
        match self.until {
            Some(t) => format!("{day} until {t} ({})", self.zone),
            None => format!("{day} ({})", self.zone),
        }
    }
}

pub fn subject(h: &Heading) -> String {
    format!("Daily digest for {}: {}", h.display_name, h.day)
}

/// Paise as rupees with two decimals and Indian digit grouping: `Rs 1,23,456.70`.
pub fn rupees(minor: i64) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!("{sign}Rs {}.{:02}", group_indian(abs / 100), abs % 100)
}

/// 1234567 -> "12,34,567": the last three digits, then pairs.
fn group_indian(n: u64) -> String {
    let digits = n.to_string();
    if digits.len() <= 3 {
        return digits;
    }
    let (head, tail) = digits.split_at(digits.len() - 3);
    let mut parts: Vec<&str> = Vec::new();
    let mut rest = head;
    while rest.len() > 2 {
        let (a, b) = rest.split_at(rest.len() - 2);
        parts.push(b);
        rest = a;
    }
    parts.push(rest);
    parts.reverse();
    format!("{},{tail}", parts.join(","))
}

/// Seconds as `12m 05s` (rounded to the second), or `n/a` without data.
pub fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "n/a".into(),
        Some(s) => {
            let s = s.round() as i64;
            if s >= 3600 {
                format!("{}h {:02}m {:02}s", s / 3600, s % 3600 / 60, s % 60)
            } else {
                format!("{}m {:02}s", s / 60, s % 60)
            }
        }
    }
}

/// The figure lines shared by both bodies, as (label, value), in the words
/// an owner uses: sales first, then last week's for comparison.
fn figures(h: &Heading, d: &Digest) -> Vec<(String, String)> {
    let weekday = h.day.format("%A");
    vec![
        (
            "Sales".into(),
            format!("{} from {}", rupees(d.gross_sales_minor), orders(d.orders)),
        ),
        (
            match h.until {
                Some(t) => format!("Last {weekday} until {t}"),
                None => format!("Last {weekday}"),
            },
            last_week(d),
        ),
        (
            "Cancelled orders (not in sales)".into(),
            d.cancelled.to_string(),
        ),
        (
            "Average time to prepare an order".into(),
            duration(d.avg_prep_seconds()),
        ),
        ("Complimentary orders".into(), d.complimentary.to_string()),
        ("Tips".into(), rupees(d.tips_minor)),
        (
            "Order updates to your connected apps paused".into(),
            times(d.breaker_opens),
        ),
    ]
}

fn orders(n: i64) -> String {
    if n == 1 {
        "1 order".into()
    } else {
        format!("{n} orders")
    }
}

fn times(n: i64) -> String {
    match n {
        0 => "never".into(),
        1 => "once".into(),
        n => format!("{n} times"),
    }
}

/// Last week's sales and how today compares: `Rs 1,000.00 from 2 orders
/// (sales up 12.5%, orders down 50.0%)`.
fn last_week(d: &Digest) -> String {
    let before = d.last_week;
    if before.orders == 0 {
        return "no sales".into();
    }
    format!(
        "{} from {} (sales {}, orders {})",
        rupees(before.gross_minor),
        orders(before.orders),
        change(d.gross_sales_minor, before.gross_minor),
        change(d.orders, before.orders),
    )
}

/// `up 12.5%`, `down 3.0%`, `unchanged`; `up from nothing` without a base.
pub fn change(now: i64, before: i64) -> String {
    if now == before {
        return "unchanged".into();
    }
    if before == 0 {
        return "up from nothing".into();
    }
    let percent = (now - before) as f64 / before.abs() as f64 * 100.0;
    if percent > 0.0 {
        format!("up {percent:.1}%")
    } else {
        format!("down {:.1}%", -percent)
    }
}

pub fn text(h: &Heading, d: &Digest) -> String {
    let mut out = format!(
        "Daily digest for {} ({})\nBusiness day: {}\n\n",
        h.display_name,
        h.tenant,
        h.business_day()
    );
    for (label, value) in figures(h, d) {
        out.push_str(&format!("{label}: {value}\n"));
    }
    out.push_str("\nTop selling items (quantity, revenue):\n");
    if d.top_items.is_empty() {
        out.push_str("  No items sold.\n");
    }
    for (i, item) in d.top_items.iter().enumerate() {
        out.push_str(&format!(
            "  {}. {} x{}, {}\n",
            i + 1,
            item.name,
            item.quantity,
            rupees(item.revenue_minor)
        ));
    }
    out.push_str("\nSent by neo-ops owner-digest.\n");
    out
}

pub fn html(h: &Heading, d: &Digest) -> String {
    let mut out = format!(
        "<!doctype html>\n<html><body style=\"font-family:sans-serif\">\n\
         <h2>Daily digest for {}</h2>\n<p>Business day: {}</p>\n<table>\n",
        escape(h.display_name),
        escape(&h.business_day())
    );
    for (label, value) in figures(h, d) {
        out.push_str(&format!(
            "<tr><th align=\"left\">{label}</th>\n<td>{}</td></tr>\n",
            money_html(&escape(&value))
        ));
    }
    out.push_str("</table>\n<h3>Top selling items</h3>\n");
    if d.top_items.is_empty() {
        out.push_str("<p>No items sold.</p>\n");
    } else {
        out.push_str("<table>\n<tr><th>Item</th><th>Qty</th><th>Revenue</th></tr>\n");
        for item in &d.top_items {
            out.push_str(&format!(
                "<tr><td>{}</td>\n<td>{}</td>\n<td>{}</td></tr>\n",
                escape(&item.name),
                item.quantity,
                money_html(&rupees(item.revenue_minor))
            ));
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// The rupee sign, as an entity so the HTML stays ASCII.
fn money_html(s: &str) -> String {
    s.replace("Rs ", "&#8377;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::Item;

    #[test]
    fn rupees_use_indian_grouping() {
        assert_eq!(rupees(0), "Rs 0.00");
        assert_eq!(rupees(5), "Rs 0.05");
        assert_eq!(rupees(123_450), "Rs 1,234.50");
        assert_eq!(rupees(12_345_670), "Rs 1,23,456.70");
        assert_eq!(rupees(1_234_567_800), "Rs 1,23,45,678.00");
        assert_eq!(rupees(-250), "-Rs 2.50");
    }

    #[test]
    fn changes_in_words() {
        assert_eq!(change(1125, 1000), "up 12.5%");
        assert_eq!(change(970, 1000), "down 3.0%");
        assert_eq!(change(5, 5), "unchanged");
        assert_eq!(change(5, 0), "up from nothing");
        assert_eq!(change(0, 4), "down 100.0%");
    }

    #[test]
    fn durations_round_to_seconds() {
        assert_eq!(duration(None), "n/a");
        assert_eq!(duration(Some(725.5)), "12m 06s");
        assert_eq!(duration(Some(3725.0)), "1h 02m 05s");
    }

    #[test]
    fn bodies_carry_the_figures_and_escape_names() {
        let h = Heading {
            tenant: "acme",
            display_name: "A&B <Diner>",
            day: NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
            until: None,
            zone: "Asia/Kolkata",
        };
        let d = Digest {
            orders: 3,
            cancelled: 1,
            tips_minor: 5000,
            top_items: vec![Item {
                name: "Dal <Makhani>".into(),
                quantity: 2,
                revenue_minor: 52000,
            }],
            ..Digest::default()
        };
        let t = text(&h, &d);
        assert!(t.contains("Sales: Rs 0.00 from 3 orders"), "{t}");
        assert!(t.contains("Last Tuesday: no sales"), "{t}");
        assert!(t.contains("Cancelled orders (not in sales): 1"), "{t}");
        assert!(t.contains("  1. Dal <Makhani> x2, Rs 520.00"), "{t}");
        let html = html(&h, &d);
        assert!(html.contains("A&amp;B &lt;Diner&gt;"), "{html}");
        assert!(html.contains("Dal &lt;Makhani&gt;"), "{html}");
        assert!(html.contains("&#8377;50.00"), "{html}");
        assert!(t.is_ascii() && html.is_ascii());
    }

    #[test]
    fn a_day_not_over_says_where_its_figures_stop() {
        let h = Heading {
            tenant: "acme",
            display_name: "Acme",
            day: NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
            until: Some("20:00"),
            zone: "Asia/Kolkata",
        };
        let t = text(&h, &Digest::default());
        assert!(
            t.contains("Business day: Tue 24 Nov 2026 until 20:00 (Asia/Kolkata)"),
            "{t}"
        );
        assert!(t.contains("Last Tuesday until 20:00: no sales"), "{t}");
        assert!(html(&h, &Digest::default()).contains("until 20:00"));
    }
}
