//! What the process counts, for `GET /metrics` (OpenMetrics, or Prometheus
//! text 0.0.4 for a scraper that does not ask for OpenMetrics; role `admin`): invocations by plugin, trigger and outcome, their durations,
//! plugin slots in use and waiting, queue depth, retries waiting and dead
//! letters per queue, and how late schedule slots fire.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InvocationLabels {
    pub plugin: String,
    /// `http`, `command`, `schedule`, `queue` or `check`. Fixed names, so
    /// counting an invocation allocates only the plugin's name.
    pub trigger: &'static str,
    /// `ok`, `failed` (the plugin's own error, or an answer of 400 or over
    /// from a command or schedule, which fails it), `trap`, `timeout`, `busy`, `refused` (no such plugin,
    /// or none for this trigger: nothing ran).
    pub outcome: &'static str,
}

/// A duration's labels: an HTTP answer and a nightly job of one plugin
/// are apart, so neither hides the other's quantiles.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub plugin: String,
    pub trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

pub struct Metrics {
    registry: Registry,
    pub invocations: Family<InvocationLabels, Counter>,
    pub duration: Family<DurationLabels, Histogram>,
    pub slots_in_use: Gauge,
    pub slots_waiting: Gauge,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub dead_letters: Family<QueueLabels, Gauge>,
    pub queue_retrying: Family<QueueLabels, Gauge>,
    pub schedule_lag: Family<PluginLabels, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let invocations = Family::<InvocationLabels, Counter>::default();
        let duration = Family::<DurationLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to about 35 min: a purge or a digest may take many
            // minutes, and one past the last bucket reads as the last
            // bucket's bound in every quantile.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 22,
            ))
        });
        let slots_in_use = Gauge::default();
        let slots_waiting = Gauge::default();
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        let dead_letters = Family::<QueueLabels, Gauge>::default();
        let queue_retrying = Family::<QueueLabels, Gauge>::default();
        let schedule_lag = Family::<PluginLabels, Gauge<f64, AtomicU64>>::default();
        let mut registry = Registry::with_prefix("neo_ops");
        registry.register(
            "invocations",
            "Plugin invocations by plugin, trigger and outcome",
            invocations.clone(),
        );
        registry.register(
            "invocation_duration_seconds",
            "Time from arrival to the end of an invocation, the wait for a slot included",
            duration.clone(),
        );
        registry.register(
            "slots_in_use",
            "Plugin instance slots held",
            slots_in_use.clone(),
        );
        registry.register(
            "slots_waiting",
            "Invocations waiting for a plugin slot",
            slots_waiting.clone(),
        );
        registry.register(
            "queue_depth",
            "Jobs waiting in a queue",
            queue_depth.clone(),
        );
        registry.register(
            "dead_letters",
            "Dead letters kept for a queue",
            dead_letters.clone(),
        );
        registry.register(
            "queue_retrying",
            "Failed jobs of a queue waiting for their retry",
            queue_retrying.clone(),
        );
        registry.register(
            "schedule_lag_seconds",
            "How late the last schedule slot of a plugin fired",
            schedule_lag.clone(),
        );
        Self {
            registry,
            invocations,
            duration,
            slots_in_use,
            slots_waiting,
            queue_depth,
            dead_letters,
            queue_retrying,
            schedule_lag,
        }
    }
}

impl Metrics {
    /// Counts one finished (or refused) invocation.
    pub fn invocation(
        &self,
        plugin: &str,
        trigger: &'static str,
        outcome: &'static str,
        seconds: f64,
    ) {
        self.invocations
            .get_or_create(&InvocationLabels {
                plugin: plugin.to_string(),
                trigger,
                outcome,
            })
            .inc();
        // Nothing ran to time when refused.
        if !matches!(outcome, "busy" | "refused") {
            self.duration
                .get_or_create(&DurationLabels {
                    plugin: plugin.to_string(),
                    trigger,
                })
                .observe(seconds);
        }
    }

    /// The OpenMetrics text of everything registered.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`prometheus_text`]'s.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header takes OpenMetrics (with a non-zero weight).
/// Prometheus asks for it first; a scraper that does not name it (an
/// older agent, `curl`) gets the Prometheus text it can read.
pub fn accepts_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && !parts.any(|p| {
                p.split_once('=').is_some_and(|(k, v)| {
                    k.trim().eq_ignore_ascii_case("q")
                        && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                })
            })
    })
}

/// OpenMetrics text rewritten as Prometheus text 0.0.4: a counter's family
/// is named as its samples are (`x_total`, or a 0.0.4 parser reads the
/// samples as untyped), and the lines 0.0.4 lacks (`# EOF`, `# UNIT`, a
/// counter's `_created`) go.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match described {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                let total = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{total} {tail}\n"));
            }
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                let created = name
                    .strip_suffix("_created")
                    .is_some_and(|family| counters.contains(family));
                if !created {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_asked_for_by_name() {
        let prometheus = "application/openmetrics-text;version=1.0.0,\
            application/openmetrics-text;version=0.0.1;q=0.75,\
            text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(accepts_openmetrics(prometheus));
        assert!(accepts_openmetrics("Application/OpenMetrics-Text"));
        for older in [
            "",
            "*/*",
            "text/plain;version=0.0.4",
            "application/openmetrics-text; q=0, text/plain",
        ] {
            assert!(!accepts_openmetrics(older), "{older}");
        }
    }

    #[test]
    fn counters_are_named_as_their_samples_in_prometheus_text() {
        let m = Metrics::default();
        m.invocation("status-page", "http", "ok", 0.002);
        let om = m.render();
        assert!(om.contains("# TYPE neo_ops_invocations counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let text = prometheus_text(&om);
        for line in [
            "# HELP neo_ops_invocations_total Plugin invocations by plugin, trigger and outcome.\n",
            "# TYPE neo_ops_invocations_total counter\n",
            "neo_ops_invocations_total{plugin=\"status-page\",trigger=\"http\",outcome=\"ok\"} 1\n",
            "# TYPE neo_ops_invocation_duration_seconds histogram\n",
            "# TYPE neo_ops_slots_in_use gauge\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        assert_eq!(
            prometheus_text(
                "# TYPE x counter\nx_total 1\nx_created 1.5\n# TYPE y unknown\ny 2\n# EOF\n"
            ),
            "# TYPE x_total counter\nx_total 1\n# TYPE y untyped\ny 2\n"
        );
    }
}
