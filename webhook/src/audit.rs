//! Audits: every pool violation of Pods and workload pod templates, whatever the pools'
//! enforcement modes, over manifests or a live cluster, found by the very decision the
//! webhook takes. What a platform team runs
//! in CI on its manifests repository, and on a cluster for what existed before the policy.

use serde::Serialize;
use serde_json::Value;

use crate::admission::Admitter;
use crate::config::MutationConfig;
use crate::offline::ClusterState;
use crate::pod::PodView;
use crate::policy::reserved::Reserved;
use crate::policy::{POLICY_RULE, Pool, rules};
use crate::workloads::ObjectId;

/// One violation of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Where it was read: `file#doc` or `cluster`.
    pub source: String,
    pub pool: String,
    pub team: String,
    pub rule: String,
    /// The pool's mode, for information: an audit reports every violation.
    pub enforcement: String,
    pub message: String,
}

/// The audit's view of the cluster: the webhook's own decision over a fixed state.
pub struct Auditor {
    admitter: Admitter,
}

impl Auditor {
    /// `state` is the cluster; `config` the webhook's tenant and token path, as `serve` has
    /// them (an injected pod carries both, and must not be reported for carrying them).
    pub fn new(state: ClusterState, config: MutationConfig) -> Self {
        Auditor {
            admitter: state.admitter(config),
        }
    }

    /// The AgentPools audited against.
    pub fn pools(&self) -> Vec<Pool> {
        let index = self.admitter.policy.snapshot();
        index.pools().map(|p| (**p).clone()).collect()
    }

    /// The findings of one object of a file (its kind and group from `kind` and `apiVersion`);
    /// none for kinds without a pod template.
    pub fn audit(&self, object: &Value, source: &str, default_namespace: &str) -> Vec<Finding> {
        match ObjectId::of_document(object, default_namespace) {
            Some(target) => self.audit_target(&target, object, source),
            None => Vec::new(),
        }
    }

    /// The findings of one object: every pool violation whatever its enforcement, and
    /// whatever else the cluster would deny it for (a missing ServiceAccount, a bad
    /// annotation), under that denial's own rule id.
    pub fn audit_target(&self, target: &ObjectId, object: &Value, source: &str) -> Vec<Finding> {
        let finding =
            |pool: &str, team: &str, rule: &str, enforcement: &str, message: String| Finding {
                api_version: object
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                kind: target.kind.clone(),
                namespace: target.namespace.clone(),
                name: target.name.clone(),
                uid: object
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                source: source.to_string(),
                pool: pool.to_string(),
                team: team.to_string(),
                rule: rule.to_string(),
                enforcement: enforcement.to_string(),
                message,
            };
        // The state has no API client, so the ServiceAccount lookup never waits on I/O.
        let decision = futures::executor::block_on(self.admitter.decide(target, object));
        let mut violations = decision.verdict.violations;
        // A stored pod of a pool that already carries ephemeral containers was debugged (the
        // API server refuses them in a pod's CREATE, so only stored pods have any).
        let pool = decision
            .pool
            .as_deref()
            .and_then(|p| self.admitter.policy.snapshot().get(p).cloned());
        let pod = object.pointer(target.pod_pointer());
        if let (Some(pool), Some(pod)) = (pool, pod)
            && let Ok(view) = PodView::new(pod, &target.display)
            && let Some(v) = rules::ephemeral_added(&pool, &view, None)
        {
            violations.push(v);
        }
        let mut findings: Vec<Finding> = violations
            .into_iter()
            .map(|v| finding(&v.pool, &v.team, v.rule, v.enforcement.as_str(), v.message))
            .collect();
        findings.extend(
            decision
                .notes
                .into_iter()
                .map(|(rule, message)| finding("", "", rule, "", message)),
        );
        if let Err(d) = decision.result
            && d.rule != POLICY_RULE
        {
            findings.push(finding("", "", d.rule, "", d.message));
        }
        findings
    }
}

/// The findings of one AgentPool: namespaces no pool may name (`reasons` by namespace, as
/// `policy::reserved` gives them).
pub fn pool_findings(pool: &Pool, source: &str, reasons: &[String]) -> Vec<Finding> {
    if reasons.is_empty() {
        return Vec::new();
    }
    vec![Finding {
        api_version: format!("{}/v1alpha1", crate::policy::crd::GROUP),
        kind: "AgentPool".into(),
        namespace: String::new(),
        name: pool.name.clone(),
        uid: None,
        source: source.to_string(),
        pool: pool.name.clone(),
        team: pool.team.clone(),
        rule: rules::rule::RESERVED_NAMESPACE.into(),
        enforcement: pool.enforcement.as_str().into(),
        message: Reserved::message(&pool.name, reasons),
    }]
}

/// A readable table: object, namespace, pool, team, rule, message.
pub fn table(findings: &[Finding]) -> String {
    let header = ["OBJECT", "NAMESPACE", "POOL", "TEAM", "RULE", "MESSAGE"];
    let rows: Vec<[String; 6]> = findings
        .iter()
        .map(|f| {
            [
                format!("{}/{}", f.kind, f.name),
                f.namespace.clone(),
                f.pool.clone(),
                f.team.clone(),
                f.rule.clone(),
                f.message.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()).take(5) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i < 5 {
                out += &format!("{cell:<width$}  ", width = widths[i]);
            } else {
                out += cell;
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header);
    for row in &rows {
        out += &line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    out
}

/// wgpolicyk8s.io/v1alpha2 PolicyReports, one per namespace (a ClusterPolicyReport for
/// AgentPools), as Policy Reporter reads them.
pub fn policy_reports(findings: &[Finding], timestamp_seconds: i64) -> Vec<Value> {
    let mut by_namespace: std::collections::BTreeMap<&str, Vec<&Finding>> = Default::default();
    for f in findings {
        by_namespace.entry(&f.namespace).or_default().push(f);
    }
    by_namespace
        .into_iter()
        .map(|(namespace, list)| {
            let results: Vec<Value> = list
                .iter()
                .map(|f| {
                    let mut resource = serde_json::json!({
                        "apiVersion": f.api_version, "kind": f.kind, "name": f.name,
                    });
                    if !f.namespace.is_empty() {
                        resource["namespace"] = f.namespace.clone().into();
                    }
                    if let Some(uid) = &f.uid {
                        resource["uid"] = uid.clone().into();
                    }
                    if f.namespace.is_empty() {
                        resource.as_object_mut().map(|r| r.remove("namespace"));
                    }
                    serde_json::json!({
                        "policy": "wi-webhook-pool-isolation",
                        "rule": f.rule,
                        "result": "fail",
                        "severity": "high",
                        "category": "Pool isolation",
                        "source": "wi-webhook",
                        "scored": true,
                        "message": f.message,
                        "resources": [resource],
                        "properties": {"pool": f.pool, "team": f.team, "enforcement": f.enforcement},
                        "timestamp": {"seconds": timestamp_seconds, "nanos": 0},
                    })
                })
                .collect();
            // Findings of no namespace (AgentPools, Azure identities) go to a ClusterPolicyReport.
            let mut metadata = serde_json::json!({"name": "wi-webhook-pool-isolation"});
            if !namespace.is_empty() {
                metadata["namespace"] = namespace.into();
            }
            metadata["labels"] = serde_json::json!({"app.kubernetes.io/managed-by": "wi-webhook"});
            let kind = if namespace.is_empty() { "ClusterPolicyReport" } else { "PolicyReport" };
            let report = serde_json::json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": kind,
                "metadata": metadata,
                "summary": {"pass": 0, "fail": results.len(), "warn": 0, "error": 0, "skip": 0},
                "results": results,
            });
            report
        })
        .collect()
}
