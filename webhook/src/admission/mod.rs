//! The admission contract: AdmissionReview in, AdmissionReview out.
//!
//! Plain functions over the request body; the HTTP layer (`api`) only moves bytes, measures
//! and logs. The one async step is the ServiceAccount lookup (cache, then a direct GET).
//!
//! Two entry points: `mutate` for the pods the webhook configuration selects for injection,
//! `validate` for the pool policy on everything else (unlabelled pods, ephemeral containers,
//! workload templates, AgentPools themselves).

mod decide;
mod envelope;
mod paths;
pub mod raw;
mod validate;

use std::sync::Arc;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Resource, TypeMeta};
use serde_json::Value;
use thiserror::Error;

use crate::config::MutationConfig;
use crate::denial::Denial;
use crate::mutation::{self, Context};
use crate::pod::PodView;
use crate::policy::{self, Policy, Subject, Verdict, Violation};
use crate::serviceaccounts::{SaAnnotations, SaMeta, ServiceAccounts, annotations};
use crate::workloads::ObjectId;
pub use raw::{PodObject, RawObject, Unread};

/// A body the webhook cannot answer with an AdmissionReview: rendered as HTTP 400.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadReview(pub String);

/// How a request was decided, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed with a non-empty patch.
    Mutated,
    /// Allowed unchanged: not a pod CREATE, not selected, or nothing to add.
    Allowed,
    Denied,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Mutated => "mutated",
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
        }
    }
}

/// The answer and what to log about it.
#[derive(Debug)]
pub struct Outcome {
    pub review: AdmissionReview<DynamicObject>,
    pub uid: String,
    pub operation: &'static str,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub dry_run: bool,
    pub decision: Decision,
    pub rule: Option<&'static str>,
    /// The pool the object belongs to, if any.
    pub pool: Option<String>,
    /// Every pool violation found, whatever its enforcement.
    pub violations: Vec<Violation>,
    /// Uses of an AgentPool's break-glass lists, allowed and recorded.
    pub grants: Vec<policy::access::Grant>,
    /// The requester, where the rules depend on who asks (`/paths`).
    pub user: Option<String>,
    /// The path the review came to (`/mutate`, `/validate`, `/paths`): one object may be
    /// decided by several webhooks.
    pub endpoint: &'static str,
}

impl Outcome {
    pub fn denied(&self) -> bool {
        self.decision == Decision::Denied
    }
}

/// The decision for one pod-shaped object.
#[derive(Debug)]
pub struct PodDecision {
    /// The patch (empty: allowed unchanged), or why it is refused.
    pub result: Result<mutation::Patch, Denial>,
    /// Pool violations and what they do (warnings, audit annotations).
    pub verdict: Verdict,
    pub pool: Option<String>,
    /// Findings that refuse nothing here but an audit reports (rule id, message).
    pub notes: Vec<(&'static str, String)>,
}

impl Default for PodDecision {
    fn default() -> Self {
        PodDecision {
            result: Ok(mutation::Patch::default()),
            verdict: Verdict::default(),
            pool: None,
            notes: Vec::new(),
        }
    }
}

/// Everything a decision needs: the webhook's configuration, its caches and its policy.
#[derive(Clone)]
pub struct Admitter {
    pub config: MutationConfig,
    pub service_accounts: ServiceAccounts,
    pub policy: Policy,
}

const VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

pub fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Decodes a request body into an AdmissionRequest (v1 or v1beta1), the object as
/// [`RawObject`] (whole) or [`PodObject`] (what the mutating decision reads), the request's
/// user, `requestKind`, `requestResource` and `options` skipped (`envelope`).
pub fn decode<T>(body: &[u8]) -> Result<AdmissionRequest<T>, BadReview>
where
    T: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    decode_as::<T, serde::de::IgnoredAny>(body)
}

/// [`decode`] with the request's `userInfo`, for the rules that depend on who asks.
pub fn decode_with_user<T>(body: &[u8]) -> Result<AdmissionRequest<T>, BadReview>
where
    T: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    decode_as::<T, k8s_openapi::api::authentication::v1::UserInfo>(body)
}

fn decode_as<T, U>(body: &[u8]) -> Result<AdmissionRequest<T>, BadReview>
where
    T: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
    U: envelope::User + serde::de::DeserializeOwned,
{
    // JSON is UTF-8 (RFC 8259), and the API server sends nothing else. Checked here, over
    // the whole body: serde_json skips the strings of fields a decoder does not keep without
    // checking them, so invalid UTF-8 in a skipped field would otherwise pass on `/mutate`
    // (which keeps little of the pod) and fail on `/validate` (which keeps it all). The
    // check is word-at-a-time over ASCII, and the parse then reads strings unchecked.
    let text = std::str::from_utf8(body).map_err(|e| {
        let (line, column) = position(body, e.valid_up_to());
        BadReview(format!(
            "body is not an AdmissionReview: invalid UTF-8 at line {line} column {column}"
        ))
    })?;
    let review: envelope::AdmissionReview<T, U> = serde_json::from_str(text)
        .map_err(|e| BadReview(format!("body is not an AdmissionReview: {e}")))?;
    if review.kind != "AdmissionReview" || !VERSIONS.contains(&review.api_version.as_str()) {
        return Err(BadReview(format!(
            "expected kind AdmissionReview in {}, got kind {:?} apiVersion {:?}",
            VERSIONS.join(" or "),
            review.kind,
            review.api_version
        )));
    }
    let request = review
        .request
        .ok_or_else(|| BadReview("AdmissionReview has no request".into()))?
        .into_admission_request(TypeMeta {
            api_version: review.api_version,
            kind: review.kind,
        });
    if request.uid.is_empty() {
        return Err(BadReview("AdmissionReview request has no uid".into()));
    }
    Ok(request)
}

/// The 1-based line and column of byte `at`, as serde_json counts them in its errors.
fn position(body: &[u8], at: usize) -> (usize, usize) {
    let before = &body[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    (line, column)
}

/// The request's namespace, else the object's: a pod from a controller has no
/// metadata.namespace, and the request's always wins.
fn namespace_of<'a, T: Resource>(req: &'a AdmissionRequest<T>, object: &'a T) -> &'a str {
    match req.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => object.meta().namespace.as_deref().unwrap_or_default(),
    }
}

fn is_core_pod<T: Resource>(req: &AdmissionRequest<T>) -> bool {
    req.kind.group.is_empty() && req.kind.kind == "Pod"
}

impl Outcome {
    /// Allowed unchanged, with what to log of `req`: where every decision starts.
    pub fn of<T: Resource>(req: &AdmissionRequest<T>) -> Outcome {
        Outcome {
            review: AdmissionResponse::from(req).into_review(),
            uid: req.uid.clone(),
            operation: operation_name(&req.operation),
            kind: req.kind.kind.clone(),
            namespace: req.namespace.clone().unwrap_or_default(),
            name: req.name.clone(),
            dry_run: req.dry_run,
            decision: Decision::Allowed,
            rule: None,
            pool: None,
            violations: Vec::new(),
            grants: Vec::new(),
            user: None,
            endpoint: "",
        }
    }
}

impl Admitter {
    /// Answers one AdmissionReview body sent to `/mutate`.
    pub async fn review(&self, body: &[u8]) -> Result<Outcome, BadReview> {
        let request = decode(body)?;
        self.admit(&request).await
    }

    /// The mutating path: pod CREATE gets the policy and the mutation; the rest is allowed.
    pub async fn admit(&self, req: &AdmissionRequest<PodObject>) -> Result<Outcome, BadReview> {
        let mut outcome = Outcome::of(req);
        if !is_core_pod(req) || req.sub_resource.is_some() || req.operation != Operation::Create {
            return Ok(outcome);
        }
        let object = req
            .object
            .as_ref()
            .ok_or_else(|| BadReview("CREATE of a Pod without request.object".into()))?;
        let target = ObjectId::of("", "Pod", &object.0.raw, namespace_of(req, object), "")
            .expect("a Pod is a target");
        if target.namespace.is_empty() {
            return Err(BadReview("Pod request has no namespace".into()));
        }
        outcome.namespace = target.namespace.clone();
        outcome.name = target.name.clone();
        let decision = self
            .mutate_pod(&object.0.raw, &target.namespace, &target.display)
            .await;
        finish(req, &mut outcome, decision);
        Ok(outcome)
    }

    /// ServiceAccount `namespace/name`: `Ok(None)` when it does not exist, a 503 denial when
    /// it cannot be looked up (fail closed).
    async fn service_account(
        &self,
        namespace: &str,
        name: &str,
        display: &str,
    ) -> Result<Option<Arc<SaMeta>>, Denial> {
        self.service_accounts
            .get(namespace, name)
            .await
            .map_err(|e| Denial {
                code: 503,
                rule: "service-account",
                message: format!(
                    "pod {display}: cannot look up ServiceAccount {namespace}/{name}: {e}; retry"
                ),
            })
    }

    /// The pool checks for one pod-shaped object.
    fn police(
        &self,
        view: &PodView<'_>,
        namespace: &str,
        service_account: &str,
        sa_annotations: Option<&SaAnnotations>,
    ) -> (
        policy::Evaluation,
        Result<Verdict, (Denial, Vec<Violation>)>,
    ) {
        let token_file = self.config.for_pod(view).token_file();
        let mut evaluation = self.policy.evaluate(&Subject {
            pod: view,
            namespace,
            service_account,
            sa_annotations,
            default_tenant: &self.config.tenant_id,
            token_file: &token_file,
            authority_host: &self.config.authority_host,
        });
        // The verdict carries the violations from here on; the evaluation keeps the pool.
        let violations = std::mem::take(&mut evaluation.violations);
        let verdict = policy::verdict(view.display(), violations);
        (evaluation, verdict)
    }

    /// The decision for one pod-shaped object: ServiceAccount lookup, pool policy, mutation.
    pub async fn mutate_pod(&self, pod: &Value, namespace: &str, display: &str) -> PodDecision {
        let mut decision = PodDecision::default();
        decision.result = self
            .mutate_pod_inner(pod, namespace, display, &mut decision)
            .await;
        decision
    }

    async fn mutate_pod_inner(
        &self,
        pod: &Value,
        namespace: &str,
        display: &str,
        decision: &mut PodDecision,
    ) -> Result<mutation::Patch, Denial> {
        let view = PodView::new(pod, display)?;
        // The webhook configuration selects on this label; checking it here too means a
        // configuration without the objectSelector cannot inject into every pod.
        if !view.selected_for_injection() {
            return Ok(mutation::Patch::default());
        }
        let sa_name = view.service_account()?;
        let Some(sa) = self.service_account(namespace, sa_name, display).await? else {
            return Err(Denial::not_found(
                "service-account",
                format!(
                    "pod {display}: ServiceAccount {namespace}/{sa_name} (spec.serviceAccountName) not found; create it before the pod"
                ),
            ));
        };
        let (mut evaluation, verdict) =
            self.police(&view, namespace, sa_name, Some(annotations(&sa)));
        decision.pool = evaluation.pool.as_ref().map(|p| p.name.clone());
        decision.notes = std::mem::take(&mut evaluation.notes);
        match verdict {
            Err((denial, violations)) => {
                decision.verdict.violations = violations;
                Err(denial)
            }
            Ok(verdict) => {
                decision.verdict = verdict;
                let pool_identity = evaluation.pool_identity();
                let ctx = Context {
                    sa_annotations: annotations(&sa),
                    pool: pool_identity.as_ref(),
                };
                mutation::mutate(&view, ctx, &self.config)
            }
        }
    }
}

/// Writes a pod decision into the outcome's response.
fn finish<T: Resource>(req: &AdmissionRequest<T>, outcome: &mut Outcome, decision: PodDecision) {
    let PodDecision {
        result,
        verdict,
        pool,
        notes: _,
    } = decision;
    outcome.pool = pool;
    let mut response = match result {
        Ok(patch) if patch.is_empty() => AdmissionResponse::from(req),
        Ok(patch) => {
            outcome.decision = Decision::Mutated;
            // The patch is already JSON text: set as bytes, where `with_patch` would
            // serialise a `json_patch::Patch` again. `patch_type` is private to kube-core,
            // so it stays unset here; `api::wire` writes `patchType: JSONPatch` with
            // every patch.
            let mut response = AdmissionResponse::from(req);
            response.patch = Some(patch.to_bytes());
            response
        }
        Err(denial) => {
            outcome.decision = Decision::Denied;
            outcome.rule = Some(denial.rule);
            deny(req, &denial)
        }
    };
    // Also with a denial for something else than the policy (a bad annotation): the pod's
    // Warn and Audit violations are reported as `wi-webhook mutate` and `audit` report them.
    // A policy denial has none: it lists every violation in its message.
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    response.audit_annotations = verdict.audit_annotations.into_iter().collect();
    outcome.violations = verdict.violations;
    outcome.review = response.into_review();
}

fn deny<T: Resource>(req: &AdmissionRequest<T>, denial: &Denial) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req).deny(denial.to_string());
    response.result.code = denial.code;
    response.result.reason = match denial.code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        _ => "ServiceUnavailable",
    }
    .to_string();
    response
}

#[cfg(test)]
mod tests;
