//! What the process counts, for `GET /metrics` (Prometheus text format, role
//! `admin`): invocations by plugin, trigger and outcome, their durations,
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
