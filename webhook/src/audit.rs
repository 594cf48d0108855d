//! Audits (SPEC section 5): every pool violation of Pods and workload pod templates, whatever
//! the pools' enforcement modes, over manifests or a live cluster. What a platform team runs
//! in CI on its manifests repository, and on a cluster for what existed before the policy.

use serde::Serialize;
use serde_json::Value;

use crate::config::MutationConfig;
use crate::pod::PodView;
use crate::policy::reserved::Reserved;
use crate::policy::{Policy, Pool, Subject, rules};
use crate::serviceaccounts::{SaCache, annotations};
use crate::workloads::pod_pointer;

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

pub struct Auditor {
    pub policy: Policy,
    pub accounts: SaCache,
    /// The webhook's tenant and token path, as `serve` would have them.
    pub config: MutationConfig,
}

impl Auditor {
    /// The findings of one object (none for kinds without a pod template).
    pub fn audit(&self, object: &Value, source: &str, default_namespace: &str) -> Vec<Finding> {
        let Some(pointer) = pod_pointer(object) else {
            return Vec::new();
        };
        let meta = |k: &str| {
            object
                .pointer(&format!("/metadata/{k}"))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let namespace = meta("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| default_namespace.to_string());
        let kind = crate::inputs::kind(object).to_string();
        let name = meta("name")
            .or_else(|| meta("generateName").map(|g| format!("{g}*")))
            .unwrap_or_default();
        let finding =
            |pool: &str, team: &str, rule: &str, enforcement: &str, message: String| Finding {
                api_version: object
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                uid: meta("uid"),
                source: source.to_string(),
                pool: pool.to_string(),
                team: team.to_string(),
                rule: rule.to_string(),
                enforcement: enforcement.to_string(),
                message,
            };
        let display = if pointer.is_empty() {
            format!("{namespace}/{name}")
        } else {
            format!("{namespace}/{name} ({kind} pod template)")
        };
        let Some(pod) = object.pointer(pointer) else {
            return vec![finding(
                "",
                "",
                "pod-shape",
                "",
                format!("{display}: no pod template"),
            )];
        };
        let view = match PodView::new(pod, &display) {
            Ok(v) => v,
            Err(d) => return vec![finding("", "", d.rule, "", d.message)],
        };
        let service_account = match view.service_account() {
            Ok(s) => s,
            Err(d) => return vec![finding("", "", d.rule, "", d.message)],
        };
        let sa = self.accounts.get(&namespace, service_account);
        let token_file = self.config.token_file();
        let mut evaluation = self.policy.evaluate(&Subject {
            pod: &view,
            namespace: &namespace,
            service_account,
            sa_annotations: sa.as_deref().map(annotations),
            default_tenant: &self.config.tenant_id,
            token_file: &token_file,
            authority_host: &self.config.authority_host,
        });
        // A stored pod of a pool that already carries ephemeral containers was debugged.
        if let Some(pool) = &evaluation.pool
            && let Some(v) = rules::ephemeral_added(pool, &view, None)
        {
            evaluation.violations.push(v);
        }
        let notes = evaluation
            .notes
            .into_iter()
            .map(|(rule, message)| finding("", "", rule, "", message));
        evaluation
            .violations
            .into_iter()
            .map(|v| finding(&v.pool, &v.team, v.rule, v.enforcement.as_str(), v.message))
            .chain(notes)
            .collect()
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
            // Findings on cluster-scoped objects (AgentPools) go to a ClusterPolicyReport.
            let mut metadata = serde_json::json!({
                "name": "wi-webhook-pool-isolation",
                "labels": {"app.kubernetes.io/managed-by": "wi-webhook"},
            });
            if !namespace.is_empty() {
                metadata["namespace"] = namespace.into();
            }
            let kind = if namespace.is_empty() { "ClusterPolicyReport" } else { "PolicyReport" };
            serde_json::json!({
                "apiVersion": "wgpolicyk8s.io/v1alpha2",
                "kind": kind,
                "metadata": metadata,
                "summary": {"pass": 0, "fail": results.len(), "warn": 0, "error": 0, "skip": 0},
                "results": results,
            })
        })
        .collect()
}
