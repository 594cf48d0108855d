//! The paths to a pool pod's token besides the pod's own configuration (`/paths`): shell
//! access (`pods/exec`, `attach`, `portforward`, `proxy`, and `services/proxy`),
//! TokenRequest for a pool's ServiceAccount,
//! pod UPDATE, and pods created by hand. The rules (`policy::{shell, tokens, update,
//! origin}`) decide from the request alone; this layer only gathers what they read.
//!
//! Its own endpoint, not `/validate`: pod CREATE reaches `/validate` through the
//! `unlabelled-pods` webhook too, and its checks must not be counted twice. The webhooks
//! calling it are validating ones, which the API server calls once, after every mutation
//! (reinvocations included), so the decision is on the pod as it will be stored.

use kube::core::admission::{AdmissionRequest, Operation};

use super::{Admitter, BadReview, Outcome, PodDecision, RawObject, finish};
use crate::pod::display_name;
use crate::policy::access::{Check, Requester};
use crate::policy::{origin, shell, tokens, update, verdict_for};

impl Admitter {
    /// Answers one AdmissionReview body sent to `/paths`.
    pub async fn review_paths(&self, body: &[u8]) -> Result<Outcome, BadReview> {
        let request = super::decode_with_user::<RawObject>(body)?;
        self.paths(&request)
    }

    pub fn paths(&self, req: &AdmissionRequest<RawObject>) -> Result<Outcome, BadReview> {
        let mut outcome = Outcome::of(req);
        let resource = &req.resource;
        if !resource.group.is_empty() {
            return Ok(outcome);
        }
        let namespace = req.namespace.clone().unwrap_or_default();
        let groups = req.user_info.groups.clone().unwrap_or_default();
        let requester = Requester {
            user: req.user_info.username.as_deref().unwrap_or_default(),
            groups: &groups,
        };
        let index = self.policy.snapshot();
        let sub = req.sub_resource.as_deref();
        let (what, check) = match (resource.resource.as_str(), sub, &req.operation) {
            (
                resource @ ("pods" | "services"),
                Some(verb @ ("exec" | "attach" | "portforward" | "proxy")),
                Operation::Connect,
            ) => {
                let kind = if resource == "pods" { "pod" } else { "service" };
                (
                    format!("{verb} into {kind} {namespace}/{}", req.name),
                    shell::check(&index, &namespace, kind, &req.name, verb, &requester),
                )
            }
            ("serviceaccounts", Some("token"), Operation::Create) => (
                format!("TokenRequest for ServiceAccount {namespace}/{}", req.name),
                tokens::check(&index, &namespace, &req.name, &requester),
            ),
            ("pods", None, Operation::Create) => {
                let object = req
                    .object
                    .as_ref()
                    .ok_or_else(|| BadReview("CREATE of a Pod without request.object".into()))?;
                let display = display_name(&object.raw, &namespace);
                outcome.name = display
                    .rsplit_once('/')
                    .map_or(String::new(), |(_, n)| n.to_string());
                let check = origin::check(&index, &namespace, &display, &requester);
                (format!("pod {display}"), check)
            }
            ("pods", None, Operation::Update) => {
                let (Some(new), Some(old)) = (&req.object, &req.old_object) else {
                    return Err(BadReview(
                        "UPDATE of a Pod without request.object and request.oldObject".into(),
                    ));
                };
                let display = format!("{namespace}/{}", req.name);
                let violations = update::check(&index, &namespace, &display, &old.raw, &new.raw);
                (
                    format!("pod {display}"),
                    Check {
                        violations,
                        grants: Vec::new(),
                    },
                )
            }
            _ => return Ok(outcome),
        };
        outcome.user = Some(requester.to_string());
        let Check { violations, grants } = check;
        let mut decision = PodDecision {
            pool: violations
                .first()
                .map(|v| v.pool.clone())
                .or_else(|| grants.first().map(|g| g.pool.clone()))
                .or_else(|| {
                    index
                        .in_namespace(&namespace)
                        .first()
                        .map(|p| p.name.clone())
                }),
            ..PodDecision::default()
        };
        match verdict_for(&what, violations) {
            Ok(verdict) => {
                decision.verdict = verdict;
                // Nothing happens on a dry run: nothing to record.
                if !req.dry_run {
                    outcome.grants = grants;
                }
            }
            Err((denial, violations)) => {
                decision.verdict.violations = violations;
                decision.result = Err(denial);
            }
        }
        finish(req, &mut outcome, decision);
        Ok(outcome)
    }
}

#[cfg(test)]
#[path = "paths_tests.rs"]
mod tests;
