//! The validating path: the pool policy on what the mutating path does not see, with no
//! patch. Unlabelled pods (a pod can claim an identity without asking for injection),
//! `kubectl debug` (pods/ephemeralcontainers), workload pod templates (so `kubectl apply` of
//! a bad Deployment fails at once), AgentPools that would conflict with another pool or name
//! a reserved namespace, and a pool's namespace labelled ignored.

use kube::core::Resource;
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::Value;

use super::{Admitter, BadReview, Outcome, PodDecision, RawObject, finish, namespace_of};
use crate::denial::Denial;
use crate::pod::{PodView, display_name};
use crate::policy::crd::{AgentPool, GROUP};
use crate::policy::reserved::ignored;
use crate::policy::{self, Pool, PoolIndex, rules};
use crate::serviceaccounts::annotations;
use crate::webhookconfig::IGNORE_LABEL;
use crate::workloads::{ObjectId, workload_of};
use k8s_openapi::api::core::v1::Namespace;

impl Admitter {
    /// Answers one AdmissionReview body sent to `/validate`.
    pub async fn review_validate(&self, body: &[u8]) -> Result<Outcome, BadReview> {
        let request = super::decode::<RawObject>(body)?;
        self.validate(&request).await
    }

    pub async fn validate(&self, req: &AdmissionRequest<RawObject>) -> Result<Outcome, BadReview> {
        let mut outcome = Outcome::of(req);
        let create_or_update = matches!(req.operation, Operation::Create | Operation::Update);
        let Some(object) = req.object.as_ref().filter(|_| create_or_update) else {
            return Ok(outcome);
        };
        let namespace = namespace_of(req, object).to_string();
        outcome.namespace = namespace.clone();
        let group = req.kind.group.as_str();
        let kind = req.kind.kind.as_str();
        let sub = req.sub_resource.as_deref();

        let decision = match (group, kind, sub, &req.operation) {
            ("", "Pod", None, Operation::Create) => {
                let display = display_name(&object.raw, &namespace);
                self.check_pod(&object.raw, None, &namespace, &display)
                    .await
            }
            ("", "Pod", Some("ephemeralcontainers"), Operation::Update) => {
                let display = display_name(&object.raw, &namespace);
                let old = req.old_object.as_ref().map(|o| &o.raw);
                self.check_pod(&object.raw, Some(old), &namespace, &display)
                    .await
            }
            (_, _, None, _) if workload_of(group, kind).is_some() => {
                let target = ObjectId::of(group, kind, &object.raw, &namespace, "")
                    .expect("a workload is a target");
                match object.raw.pointer(target.pod_pointer()) {
                    Some(template) => {
                        self.check_pod(template, None, &namespace, &target.display)
                            .await
                    }
                    None => return Ok(outcome),
                }
            }
            (GROUP, "AgentPool", None, _) => self.check_agent_pool(&object.raw).await,
            ("", "Namespace", None, _) => self.check_namespace(&object.raw).await,
            _ => return Ok(outcome),
        };
        if outcome.name.is_empty() {
            outcome.name = object.meta().name.clone().unwrap_or_default();
        }
        finish(req, &mut outcome, decision);
        Ok(outcome)
    }

    /// The pool checks of a pod or pod template; `old` is given for an ephemeral-container
    /// update (the pod before it).
    pub(super) async fn check_pod(
        &self,
        pod: &Value,
        old: Option<Option<&Value>>,
        namespace: &str,
        display: &str,
    ) -> PodDecision {
        let mut decision = PodDecision::default();
        let view = match PodView::new(pod, display) {
            Ok(v) => v,
            Err(d) => {
                decision.result = Err(d);
                return decision;
            }
        };
        let sa_name = match view.service_account() {
            Ok(s) => s,
            Err(d) => {
                decision.result = Err(d);
                return decision;
            }
        };
        // A workload may come before its ServiceAccount: check what can be checked.
        let sa = match self.service_account(namespace, sa_name, display).await {
            Ok(sa) => sa,
            Err(d) => {
                decision.result = Err(d);
                return decision;
            }
        };
        let token_file = self.config.for_pod(&view).token_file();
        let mut evaluation = self.policy.evaluate(&policy::Subject {
            pod: &view,
            namespace,
            service_account: sa_name,
            sa_annotations: sa.as_deref().map(annotations),
            default_tenant: &self.config.tenant_id,
            token_file: &token_file,
            authority_host: &self.config.authority_host,
        });
        if let (Some(old), Some(pool)) = (old, &evaluation.pool) {
            let old_view = old.and_then(|o| PodView::new(o, display).ok());
            if let Some(v) = rules::ephemeral_added(pool, &view, old_view.as_ref()) {
                evaluation.violations.push(v);
            }
        }
        decision.pool = evaluation.pool.as_ref().map(|p| p.name.clone());
        decision.notes = evaluation.notes;
        match policy::verdict(display, evaluation.violations) {
            Ok(verdict) => decision.verdict = verdict,
            Err((denial, violations)) => {
                decision.verdict.violations = violations;
                decision.result = Err(denial);
            }
        }
        decision
    }

    /// A new or changed AgentPool must not share a namespace or its client id with another.
    async fn check_agent_pool(&self, raw: &Value) -> PodDecision {
        let mut decision = PodDecision::default();
        let parsed: Result<AgentPool, _> = serde_json::from_value(raw.clone());
        let Some(pool) = parsed.ok().as_ref().and_then(Pool::from_resource) else {
            decision.result = Err(Denial::invalid("agentpool-shape", "not a valid AgentPool"));
            return decision;
        };
        let mut others: Vec<Pool> = self
            .policy
            .current_pools()
            .await
            .into_iter()
            .filter(|p| p.name != pool.name)
            .collect();
        others.push(pool.clone());
        let conflicts = PoolIndex::build(&others).conflicts_of(&pool);
        decision.pool = Some(pool.name.clone());
        let mut reserved = Vec::new();
        for ns in &pool.namespaces {
            reserved.extend(self.policy.reserved.why(ns).await);
        }
        if !reserved.is_empty() {
            decision.result = Err(Denial {
                code: 403,
                rule: rules::rule::RESERVED_NAMESPACE,
                message: policy::reserved::Reserved::message(&pool.name, &reserved),
            });
            return decision;
        }
        if !conflicts.is_empty() {
            let what = conflicts
                .iter()
                .map(|c| format!("{} {} is already pool {}'s", c.field, c.value, c.pool))
                .collect::<Vec<_>>()
                .join("; ");
            decision.result = Err(Denial {
                code: 403,
                rule: rules::rule::CONFLICT,
                message: format!(
                    "AgentPool {}: {what}; one identity and one namespace belong to one pool: change this pool or the other one first",
                    pool.name
                ),
            });
        }
        decision
    }
}

impl Admitter {
    /// A pool's namespace must not opt out of the pod webhooks.
    async fn check_namespace(&self, raw: &Value) -> PodDecision {
        let mut decision = PodDecision::default();
        let Ok(ns) = serde_json::from_value::<Namespace>(raw.clone()) else {
            decision.result = Err(Denial::invalid("namespace-shape", "not a valid Namespace"));
            return decision;
        };
        let name = ns.metadata.name.clone().unwrap_or_default();
        if !ignored(&ns) {
            return decision;
        }
        let owners: Vec<String> = self
            .policy
            .current_pools()
            .await
            .into_iter()
            .filter(|p| p.namespaces.contains(&name))
            .map(|p| p.name)
            .collect();
        if !owners.is_empty() {
            decision.pool = owners.first().cloned();
            decision.result = Err(Denial {
                code: 403,
                rule: rules::rule::NAMESPACE_IGNORED,
                message: format!(
                    "namespace {name} belongs to AgentPool {}: labelling it {IGNORE_LABEL}=true would take its pods out of the webhook's checks; remove the namespace from the AgentPool first",
                    owners.join(", ")
                ),
            });
        }
        decision
    }
}
