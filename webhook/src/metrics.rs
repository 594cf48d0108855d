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

/// The rule id a denial names (static: one per check).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    pub pool: String,
    pub rule: String,
    pub enforcement: String,
}

/// Outcome of one pass keeping the webhook configurations scoped to the pools' namespaces.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `unchanged`, `patched` or `error`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub pool: String,
    pub rule: String,
}

pub struct Metrics {
    /// Passes of the scoping task (`crate::scoping`), by result.
    pub scope_syncs: Family<ScopeLabels, Counter>,
    /// Namespaces the fail-closed webhooks are scoped to, as last written.
    pub scoped_namespaces: Gauge,
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
    /// Denials by rule id: the Enforce pool rules that denied, else the rule the denial names.
    pub denials: Family<DenialLabels, Counter>,
    /// Requests refused 503 because every admission slot stayed busy (api::limit).
    pub shed_requests: Counter,
    /// 1 once the ServiceAccount and AgentPool caches have synced (0 before, and while
    /// shutting down), set on each scrape.
    pub caches_synced: Gauge,
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
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "denials",
            "Admission requests denied, by the rule that denied them",
            denials.clone(),
        );
        let shed_requests = Counter::default();
        registry.register(
            "shed_requests",
            "Requests refused with 503 because every admission slot stayed busy (overload)",
            shed_requests.clone(),
        );
        let caches_synced = Gauge::default();
        registry.register(
            "caches_synced",
            "1 once the ServiceAccount and AgentPool caches have synced, else 0",
            caches_synced.clone(),
        );
        let scope_syncs = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "scope_syncs",
            "Passes keeping the fail-closed webhooks scoped to the pools' namespaces, by result",
            scope_syncs.clone(),
        );
        let scoped_namespaces = Gauge::default();
        registry.register(
            "scoped_namespaces",
            "Pool namespaces the fail-closed webhooks are scoped to, as last written",
            scoped_namespaces.clone(),
        );
        Metrics {
            scope_syncs,
            scoped_namespaces,
            access_grants,
            violations,
            denials,
            shed_requests,
            caches_synced,
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

    /// A denial, by the rule id it names (`unknown` when none).
    pub fn denial(&self, rule: Option<&'static str>) {
        self.denials
            .get_or_create(&DenialLabels {
                rule: rule.unwrap_or("unknown"),
            })
            .inc();
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
