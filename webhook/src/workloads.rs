//! Where the pod template sits in each workload kind the webhook understands.

use serde_json::Value;

/// JSON pointer of the pod template in `kind` (apps/v1 and batch/v1), `None` for other kinds.
pub fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// The pod-shaped object of a Pod (itself) or a workload (its template).
pub fn pod_pointer(object: &Value) -> Option<&'static str> {
    match crate::inputs::kind(object) {
        "Pod" => Some(""),
        k => template_pointer(k),
    }
}
