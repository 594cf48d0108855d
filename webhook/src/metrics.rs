//! Prometheus metrics of the admission path.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Static strings: every admission counts itself without allocating its labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub decision: &'static str,
    pub operation: &'static str,
    pub dry_run: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub pool: String,
    pub rule: String,
    pub enforcement: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub pool: String,
    pub rule: String,
}

pub struct Metrics {
    /// Uses of an AgentPool's break-glass lists (`spec.access`), by pool and rule.
    pub access_grants: Family<GrantLabels, Counter>,
    /// Pool violations found, by pool, rule and enforcement (also in Audit mode).
    pub violations: Family<ViolationLabels, Counter>,
    pub pools: Gauge,
    pub pool_conflicts: Gauge,
    pub registry: Registry,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub latency: Histogram,
    /// Bodies that were not AdmissionReviews (answered 4xx without a decision).
    pub bad_requests: Counter,
    pub serviceaccounts: Gauge,
    /// notAfter of the serving certificate in use (Unix seconds), set on each (re)load.
    pub serving_cert_expiry: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("wi_webhook");
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "admissions",
            "Admission requests answered, by decision, operation and dry-run",
            admissions.clone(),
        );
        // 25 us .. ~0.8 s: fine enough to tell sub-millisecond answers apart.
        let latency = Histogram::new(exponential_buckets(0.000025, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time from a complete request body to the encoded answer",
            latency.clone(),
        );
        let bad_requests = Counter::default();
        registry.register(
            "bad_requests",
            "Request bodies refused before a decision (not an AdmissionReview, too large)",
            bad_requests.clone(),
        );
        let serviceaccounts = Gauge::default();
        registry.register(
            "serviceaccounts_cached",
            "ServiceAccounts in the watch-backed cache",
            serviceaccounts.clone(),
        );
        let serving_cert_expiry = Gauge::default();
        registry.register(
            "serving_cert_expiry_seconds",
            "Expiry (notAfter, Unix time) of the serving certificate in use",
            serving_cert_expiry.clone(),
        );
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "pool_violations",
            "Pool isolation violations found, by pool, rule and enforcement",
            violations.clone(),
        );
        let access_grants = Family::<GrantLabels, Counter>::default();
        registry.register(
            "pool_access_grants",
            "Requests allowed because an AgentPool's break-glass list (spec.access) names the requester, by pool and rule",
            access_grants.clone(),
        );
        let pools = Gauge::default();
        registry.register(
            "agentpools",
            "AgentPools in the watch-backed index",
            pools.clone(),
        );
        let pool_conflicts = Gauge::default();
        registry.register(
            "agentpool_conflicts",
            "AgentPools that share a namespace or client id with another pool",
            pool_conflicts.clone(),
        );
        Metrics {
            access_grants,
            violations,
            pools,
            pool_conflicts,
            registry,
            admissions,
            latency,
            bad_requests,
            serviceaccounts,
            serving_cert_expiry,
        }
    }
}

impl Metrics {
    pub fn record(
        &self,
        decision: &'static str,
        operation: &'static str,
        dry_run: bool,
        seconds: f64,
    ) {
        self.admissions
            .get_or_create(&AdmissionLabels {
                decision,
                operation,
                dry_run: if dry_run { "true" } else { "false" },
            })
            .inc();
        self.latency.observe(seconds);
    }

    pub fn violation(&self, pool: &str, rule: &str, enforcement: &str) {
        self.violations
            .get_or_create(&ViolationLabels {
                pool: pool.to_string(),
                rule: rule.to_string(),
                enforcement: enforcement.to_string(),
            })
            .inc();
    }

    pub fn grant(&self, pool: &str, rule: &str) {
        self.access_grants
            .get_or_create(&GrantLabels {
                pool: pool.to_string(),
                rule: rule.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
