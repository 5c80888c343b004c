//! The few lines of the Prometheus text exposition format a gauge needs:
//! `name{labels} value [timestamp]`, comments and other metrics skipped.

#[derive(Debug, PartialEq)]
pub struct Sample {
    /// `{...}` as written, or empty.
    pub labels: String,
    pub value: f64,
}

/// Every sample of metric `name`.
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|line| sample(line.trim(), name))
        .collect()
}

fn sample(line: &str, name: &str) -> Option<Sample> {
    if line.starts_with('#') {
        return None;
    }
    let rest = line.strip_prefix(name)?;
    let (labels, rest) = if rest.starts_with('{') {
        // Label values may hold spaces and escaped quotes, not an unquoted '}'.
        let end = closing_brace(rest)?;
        (rest[..=end].to_string(), &rest[end + 1..])
    } else if rest.starts_with([' ', '\t']) {
        (String::new(), rest)
    } else {
        return None; // another metric sharing the prefix, e.g. `name_total`
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { labels, value })
}

/// The index of the `}` closing the label set, skipping quoted values.
fn closing_brace(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP neo_replicas_healthy Healthy replicas.\n\
        # TYPE neo_replicas_healthy gauge\n\
        neo_replicas_healthy{deployment=\"api\",note=\"a } b \\\"q\\\"\"} 3\n\
        neo_replicas_healthy_total 9\n\
        neo_replicas_healthy 1 1700000000000\n\
        other_metric 5\n\
        neo_replicas_healthy{deployment=\"x\"} NaN\n";

    #[test]
    fn reads_every_series_of_the_gauge_only() {
        let s = samples(TEXT, "neo_replicas_healthy");
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels, "{deployment=\"api\",note=\"a } b \\\"q\\\"\"}");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(
            s[1],
            Sample {
                labels: String::new(),
                value: 1.0
            }
        );
        assert!(s[2].value.is_nan());
        assert!(samples(TEXT, "missing").is_empty());
    }
}
