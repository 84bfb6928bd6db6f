//! Process-wide counters and histograms, served at `GET /metrics` in the Prometheus text
//! format. One static set: the hub, the writer and the sockets bump them without plumbing.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::{counter::Counter, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;
use std::sync::LazyLock;

pub struct Metrics {
    pub connections: Gauge,
    /// Chat `send` requests received.
    pub messages_in: Counter,
    /// Frames written to client sockets.
    pub frames_out: Counter,
    /// Of those, frames the publishing task wrote straight to the socket (no queue).
    pub frames_direct: Counter,
    /// Timeline frames sent to subscribers (one message to 100 members is 100).
    pub fanout_deliveries: Counter,
    /// Droppable frames (presence, typing) skipped because a queue was nearly full.
    pub droppable_skipped: Counter,
    /// Connections closed with 1013 because their queue overflowed.
    pub slow_consumer_closes: Counter,
    pub rate_limit_hits: Counter,
    /// From a `send` frame arriving to its `ack` being queued (includes the commit).
    pub send_to_ack_seconds: Histogram,
    /// One write transaction, BEGIN to COMMIT.
    pub store_commit_seconds: Histogram,
    /// Writes folded into one transaction.
    pub store_batch_size: Histogram,
    registry: Registry,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Latency buckets from 100 µs to ~1.6 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 15)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("huddle");
        let metrics = Metrics {
            connections: Gauge::default(),
            messages_in: Counter::default(),
            frames_out: Counter::default(),
            frames_direct: Counter::default(),
            fanout_deliveries: Counter::default(),
            droppable_skipped: Counter::default(),
            slow_consumer_closes: Counter::default(),
            rate_limit_hits: Counter::default(),
            send_to_ack_seconds: Histogram::new(latency_buckets()),
            store_commit_seconds: Histogram::new(latency_buckets()),
            store_batch_size: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                1.0, 2.0, 10,
            )),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "messages_in",
            "Chat send requests received",
            metrics.messages_in.clone(),
        );
        registry.register(
            "frames_out",
            "Frames written to client sockets",
            metrics.frames_out.clone(),
        );
        registry.register(
            "frames_direct",
            "Frames written straight to the socket by the task that published them, skipping the writer task (a part of frames_out)",
            metrics.frames_direct.clone(),
        );
        registry.register(
            "fanout_deliveries",
            "Timeline frames sent to room subscribers",
            metrics.fanout_deliveries.clone(),
        );
        registry.register(
            "droppable_skipped",
            "Presence or typing frames skipped because a client queue was nearly full",
            metrics.droppable_skipped.clone(),
        );
        registry.register(
            "slow_consumer_closes",
            "Connections closed (1013) because their outbound queue overflowed",
            metrics.slow_consumer_closes.clone(),
        );
        registry.register(
            "rate_limit_hits",
            "Requests refused as rate_limited",
            metrics.rate_limit_hits.clone(),
        );
        registry.register(
            "send_to_ack_seconds",
            "Time from a send frame's arrival to its ack being queued",
            metrics.send_to_ack_seconds.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Duration of one write transaction (group commit)",
            metrics.store_commit_seconds.clone(),
        );
        registry.register(
            "store_batch_size",
            "Writes folded into one transaction",
            metrics.store_batch_size.clone(),
        );
        Metrics { registry, ..metrics }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
