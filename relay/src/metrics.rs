//! Prometheus metrics of operations.md section 7. One registry per process; stages increment
//! the typed handles below. No label ever carries an address, account, token or IP (PRIV-15).

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub smtp_messages: Family<Labels, Counter>,
    pub delivery_latency: Family<Labels, Histogram, fn() -> Histogram>,
    pub delivery_attempts: Family<Labels, Counter>,
    pub queue_size: Gauge,
    pub queue_oldest_seconds: Gauge,
    pub bounces: Counter,
    pub imap_connections: Gauge,
    pub imap_idle_connections: Gauge,
    pub smtp_connections: Family<Labels, Gauge>,
    pub push_requests: Family<Labels, Counter>,
    pub push_coalesced: Counter,
    pub push_pending: Gauge,
    pub push_latency: Histogram,
    pub accounts: Gauge,
    pub accounts_created: Counter,
    pub accounts_deleted: Family<Labels, Counter>,
    pub registrations_refused: Family<Labels, Counter>,
    pub login_failures: Family<Labels, Counter>,
    pub expiry_removed: Family<Labels, Counter>,
    pub expiry_duration: Histogram,
    pub mta_sts_violations: Family<Labels, Counter>,
    pub tls_certificate_expiry_seconds: Gauge,
    pub limit_hits: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Self {
            registry: Arc::new(Registry::default()),
            smtp_messages: Family::default(),
            delivery_latency: Family::new_with_constructor(latency_histogram),
            delivery_attempts: Family::default(),
            queue_size: Gauge::default(),
            queue_oldest_seconds: Gauge::default(),
            bounces: Counter::default(),
            imap_connections: Gauge::default(),
            imap_idle_connections: Gauge::default(),
            smtp_connections: Family::default(),
            push_requests: Family::default(),
            push_coalesced: Counter::default(),
            push_pending: Gauge::default(),
            push_latency: latency_histogram(),
            accounts: Gauge::default(),
            accounts_created: Counter::default(),
            accounts_deleted: Family::default(),
            registrations_refused: Family::default(),
            login_failures: Family::default(),
            expiry_removed: Family::default(),
            expiry_duration: Histogram::new(exponential_buckets(0.001, 4.0, 12)),
            mta_sts_violations: Family::default(),
            tls_certificate_expiry_seconds: Gauge::default(),
            limit_hits: Family::default(),
        };
        r.register("chatrelay_smtp_messages", "Messages by listener, result and reason", m.smtp_messages.clone());
        r.register(
            "chatrelay_delivery_latency_seconds",
            "Acceptance to stored (local) or remote 2xx",
            m.delivery_latency.clone(),
        );
        r.register("chatrelay_delivery_attempts", "Outbound delivery attempts", m.delivery_attempts.clone());
        r.register("chatrelay_queue_size", "Outbound queue entries", m.queue_size.clone());
        r.register("chatrelay_queue_oldest_seconds", "Age of the oldest queue entry", m.queue_oldest_seconds.clone());
        r.register("chatrelay_bounces", "Bounces generated", m.bounces.clone());
        r.register("chatrelay_imap_connections", "Open IMAP connections", m.imap_connections.clone());
        r.register("chatrelay_imap_idle_connections", "IMAP connections in IDLE", m.imap_idle_connections.clone());
        r.register("chatrelay_smtp_connections", "Open SMTP connections", m.smtp_connections.clone());
        r.register("chatrelay_push_requests", "Push requests by result", m.push_requests.clone());
        r.register("chatrelay_push_coalesced", "Notifications merged into a pending one", m.push_coalesced.clone());
        r.register("chatrelay_push_pending", "Pending push jobs", m.push_pending.clone());
        r.register("chatrelay_push_latency_seconds", "Message stored to proxy 200", m.push_latency.clone());
        r.register("chatrelay_accounts", "Accounts", m.accounts.clone());
        r.register("chatrelay_accounts_created", "Accounts created", m.accounts_created.clone());
        r.register("chatrelay_accounts_deleted", "Accounts deleted by reason", m.accounts_deleted.clone());
        r.register(
            "chatrelay_registrations_refused",
            "New accounts refused by reason",
            m.registrations_refused.clone(),
        );
        r.register("chatrelay_login_failures", "Failed logins by protocol", m.login_failures.clone());
        r.register("chatrelay_expiry_removed", "Removed by the expiry pass, by reason", m.expiry_removed.clone());
        r.register("chatrelay_expiry_duration_seconds", "Duration of expiry passes", m.expiry_duration.clone());
        r.register("chatrelay_mta_sts_violations", "MTA-STS policy violations by mode", m.mta_sts_violations.clone());
        r.register(
            "chatrelay_tls_certificate_expiry_seconds",
            "Seconds until the served certificate expires",
            m.tls_certificate_expiry_seconds.clone(),
        );
        r.register(
            "chatrelay_limit_hits",
            "Requests refused or cut by a resource limit, by limit",
            m.limit_hits.clone(),
        );
        Self { registry: Arc::new(r), ..m }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn smtp_message(&self, listener: &'static str, result: &'static str, reason: &'static str) {
        self.smtp_messages.get_or_create(&vec![("listener", listener), ("result", result), ("reason", reason)]).inc();
    }

    /// Count and log (without any address) one hit of a work bound.
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&vec![("limit", limit)]).inc();
        tracing::info!(limit, "limit hit");
    }

    pub fn login_failure(&self, protocol: &'static str) {
        self.login_failures.get_or_create(&vec![("protocol", protocol)]).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
