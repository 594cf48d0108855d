//! What the cluster decides about a Pod or workload as a whole, for the offline commands: the
//! same functions `/mutate` and `/validate` run, called in the order the API server calls
//! them. A workload is checked on `/validate` when it is applied; the pods its controller
//! then creates from its template go to `/mutate` when the mutating webhook's objectSelector
//! selects them, and to `/validate` otherwise.

use serde_json::Value;

use super::{Admitter, PodDecision};
use crate::pod::{PodView, bad_type};
use crate::workloads::ObjectId;

impl Admitter {
    /// The decision on `object` (a Pod, or a workload whose template is judged as its pods);
    /// a patch is relative to the pod, or to the workload's pod template.
    pub async fn decide(&self, target: &ObjectId, object: &Value) -> PodDecision {
        let pointer = target.pod_pointer();
        let Some(pod) = object.pointer(pointer) else {
            let field = pointer.trim_start_matches('/').replace('/', ".");
            return PodDecision {
                result: Err(bad_type(&target.display, &field, "present")),
                ..PodDecision::default()
            };
        };
        let (namespace, display) = (target.namespace.as_str(), target.display.as_str());
        let applied = match target.workload {
            Some(_) => {
                let checked = self.check_pod(pod, None, namespace, display).await;
                if checked.result.is_err() {
                    return checked;
                }
                Some(checked)
            }
            None => None,
        };
        let selected = PodView::new(pod, display).is_ok_and(|v| v.selected_for_injection());
        match applied {
            Some(checked) if selected => {
                let decision = self.mutate_pod(pod, namespace, display).await;
                merge(checked, decision)
            }
            // An unselected template's pods are checked exactly as the template was.
            Some(checked) => checked,
            None if selected => self.mutate_pod(pod, namespace, display).await,
            None => self.check_pod(pod, None, namespace, display).await,
        }
    }
}

/// A workload's answer, then its pods': the pods' result, with every violation either
/// reported (the pods' check stops early when, say, their ServiceAccount does not exist).
fn merge(workload: PodDecision, mut pods: PodDecision) -> PodDecision {
    let verdict = &mut pods.verdict;
    for v in workload.verdict.violations {
        if !verdict.violations.contains(&v) {
            verdict.violations.push(v);
        }
    }
    for w in workload.verdict.warnings {
        if !verdict.warnings.contains(&w) {
            verdict.warnings.push(w);
        }
    }
    for (key, value) in workload.verdict.audit_annotations {
        verdict.audit_annotations.entry(key).or_insert(value);
    }
    for n in workload.notes {
        if !pods.notes.contains(&n) {
            pods.notes.push(n);
        }
    }
    pods.pool = pods.pool.or(workload.pool);
    pods
}
