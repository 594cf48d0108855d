//! The admission contract (SPEC section 3): AdmissionReview in, AdmissionReview out.
//!
//! Plain functions over the request body; the HTTP layer (`api`) only moves bytes, measures
//! and logs. The one async step is the ServiceAccount lookup (cache, then a direct GET).

pub mod raw;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::{DynamicObject, Resource};
use thiserror::Error;

use crate::config::MutationConfig;
use crate::denial::Denial;
use crate::keys;
use crate::mutation::{self, Context};
use crate::pod::{PodView, display_name};
use crate::policy::Policy;
use crate::serviceaccounts::{ServiceAccounts, annotations};
pub use raw::RawObject;

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
    pub namespace: String,
    pub pod: String,
    pub dry_run: bool,
    pub decision: Decision,
    pub rule: Option<&'static str>,
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

/// Decodes a request body into an AdmissionRequest (v1 or v1beta1).
pub fn decode(body: &[u8]) -> Result<AdmissionRequest<RawObject>, BadReview> {
    let review: AdmissionReview<RawObject> = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("body is not an AdmissionReview: {e}")))?;
    if review.types.kind != "AdmissionReview"
        || !VERSIONS.contains(&review.types.api_version.as_str())
    {
        return Err(BadReview(format!(
            "expected kind AdmissionReview in {}, got kind {:?} apiVersion {:?}",
            VERSIONS.join(" or "),
            review.types.kind,
            review.types.api_version
        )));
    }
    let request: AdmissionRequest<RawObject> = review
        .try_into()
        .map_err(|_| BadReview("AdmissionReview has no request".into()))?;
    if request.uid.is_empty() {
        return Err(BadReview("AdmissionReview request has no uid".into()));
    }
    Ok(request)
}

impl Admitter {
    /// Answers one AdmissionReview body.
    pub async fn review(&self, body: &[u8]) -> Result<Outcome, BadReview> {
        let request = decode(body)?;
        self.admit(&request).await
    }

    pub async fn admit(&self, req: &AdmissionRequest<RawObject>) -> Result<Outcome, BadReview> {
        let mut outcome = Outcome {
            review: AdmissionResponse::from(req).into_review(),
            uid: req.uid.clone(),
            operation: operation_name(&req.operation),
            namespace: req.namespace.clone().unwrap_or_default(),
            pod: req.name.clone(),
            dry_run: req.dry_run,
            decision: Decision::Allowed,
            rule: None,
        };
        let is_pod =
            req.kind.group.is_empty() && req.kind.kind == "Pod" && req.sub_resource.is_none();
        if !is_pod || req.operation != Operation::Create {
            return Ok(outcome);
        }
        let object = req
            .object
            .as_ref()
            .ok_or_else(|| BadReview("CREATE of a Pod without request.object".into()))?;
        // A pod from a controller has no metadata.namespace: the request's namespace wins.
        let namespace = match req.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => object.meta().namespace.as_deref().unwrap_or_default(),
        };
        if namespace.is_empty() {
            return Err(BadReview("Pod request has no namespace".into()));
        }
        outcome.namespace = namespace.to_string();
        let display = display_name(&object.raw, namespace);
        outcome.pod = display
            .rsplit_once('/')
            .map_or(String::new(), |(_, n)| n.to_string());

        let response = match self.mutate_pod(&object.raw, namespace, &display).await {
            Ok(patch) if patch.0.is_empty() => AdmissionResponse::from(req),
            Ok(patch) => {
                outcome.decision = Decision::Mutated;
                AdmissionResponse::from(req)
                    .with_patch(patch)
                    .map_err(|e| BadReview(format!("cannot serialise the patch: {e}")))?
            }
            Err(denial) => {
                outcome.decision = Decision::Denied;
                outcome.rule = Some(denial.rule);
                deny(req, &denial)
            }
        };
        outcome.review = response.into_review();
        Ok(outcome)
    }

    /// The decision for one pod-shaped object: ServiceAccount lookup, pool policy, mutation.
    pub async fn mutate_pod(
        &self,
        pod: &serde_json::Value,
        namespace: &str,
        display: &str,
    ) -> Result<json_patch::Patch, Denial> {
        let view = PodView::new(pod, display)?;
        // The webhook configuration selects on this label; checking it here too means a
        // configuration without the objectSelector cannot inject into every pod.
        if view.label(keys::USE_LABEL) != Some("true") {
            return Ok(json_patch::Patch(vec![]));
        }
        let sa_name = view.service_account()?;
        let sa = match self.service_accounts.get(namespace, sa_name).await {
            Ok(Some(sa)) => sa,
            Ok(None) => {
                return Err(Denial::not_found(
                    "service-account",
                    format!(
                        "pod {display}: ServiceAccount {namespace}/{sa_name} (spec.serviceAccountName) not found; create it before the pod"
                    ),
                ));
            }
            Err(e) => {
                return Err(Denial {
                    code: 503,
                    rule: "service-account",
                    message: format!(
                        "pod {display}: cannot look up ServiceAccount {namespace}/{sa_name}: {e}; retry"
                    ),
                });
            }
        };
        let outcome = self.policy.evaluate(&view, namespace);
        let ctx = Context {
            sa_annotations: annotations(&sa),
            pool: outcome.pool_identity.as_ref(),
        };
        mutation::mutate(&view, ctx, &self.config)
    }
}

fn deny(req: &AdmissionRequest<RawObject>, denial: &Denial) -> AdmissionResponse {
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
