//! The kinds of object the webhook judges, in one table, and what an object is (kind, group,
//! namespace, name, how messages name it) worked out in one place for every entry point:
//! `/mutate`, `/validate`, `wi-webhook mutate` and `wi-webhook audit`.
//!
//! The workloads are every built-in kind the API server's controllers create pods from.
//! `PodTemplate` (core/v1, pod template at `/template`) is left out on purpose: no built-in
//! controller creates pods from it, so it grants nothing; whatever third-party controller
//! reads one creates its pods through the API, where they are checked like any pod.

use serde_json::Value;

/// A workload kind and where its pod template sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// API group (`""` for core).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The resource name the webhook configuration's rules and the list API use.
    pub plural: &'static str,
    /// JSON pointer of the pod template.
    pub template: &'static str,
}

const fn workload(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    template: &'static str,
) -> Workload {
    Workload {
        group,
        version: "v1",
        kind,
        plural,
        template,
    }
}

/// Every workload kind, in the order the webhook configuration lists them.
pub static WORKLOADS: [Workload; 7] = [
    workload("apps", "Deployment", "deployments", "/spec/template"),
    workload("apps", "StatefulSet", "statefulsets", "/spec/template"),
    workload("apps", "DaemonSet", "daemonsets", "/spec/template"),
    workload("apps", "ReplicaSet", "replicasets", "/spec/template"),
    workload("batch", "Job", "jobs", "/spec/template"),
    workload(
        "batch",
        "CronJob",
        "cronjobs",
        "/spec/jobTemplate/spec/template",
    ),
    workload(
        "",
        "ReplicationController",
        "replicationcontrollers",
        "/spec/template",
    ),
];

/// The workload kind `kind` of API group `group`, if it is one.
pub fn workload_of(group: &str, kind: &str) -> Option<&'static Workload> {
    WORKLOADS
        .iter()
        .find(|w| w.group == group && w.kind == kind)
}

/// The API group of an `apiVersion` (`apps/v1` -> `apps`, `v1` -> core, `""`).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// What an object is and how every message names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectId {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    /// `metadata.name`, else `generateName*` (a pod a controller is about to create), else empty.
    pub name: String,
    /// `namespace/name` for a Pod, `namespace/name (Kind pod template)` for a workload.
    pub display: String,
    /// The workload kind, `None` for a Pod.
    pub workload: Option<&'static Workload>,
}

impl ObjectId {
    /// A Pod or a workload of kind `kind` in `group`; `None` for any other kind. The
    /// namespace is the request's (`request_namespace`, where it is not empty: a pod from a
    /// controller names none itself), else the object's, else `fallback_namespace`.
    pub fn of(
        group: &str,
        kind: &str,
        object: &Value,
        request_namespace: &str,
        fallback_namespace: &str,
    ) -> Option<ObjectId> {
        let workload = match (group, kind) {
            ("", "Pod") => None,
            _ => Some(workload_of(group, kind)?),
        };
        let meta = |key: &str| {
            object
                .pointer(&format!("/metadata/{key}"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let namespace = Some(request_namespace)
            .filter(|n| !n.is_empty())
            .or_else(|| meta("namespace"))
            .unwrap_or(fallback_namespace)
            .to_string();
        let name = match (meta("name"), meta("generateName")) {
            (Some(n), _) => n.to_string(),
            (None, Some(g)) => format!("{g}*"),
            (None, None) => String::new(),
        };
        let shown = if name.is_empty() { "<unnamed>" } else { &name };
        let display = match workload {
            None => format!("{namespace}/{shown}"),
            Some(w) => format!("{namespace}/{shown} ({} pod template)", w.kind),
        };
        Some(ObjectId {
            group: group.to_string(),
            kind: kind.to_string(),
            namespace,
            name,
            display,
            workload,
        })
    }

    /// A document read from a file: its kind and group from `kind` and `apiVersion`.
    pub fn of_document(object: &Value, fallback_namespace: &str) -> Option<ObjectId> {
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        let kind = crate::inputs::kind(object);
        ObjectId::of(group_of(api_version), kind, object, "", fallback_namespace)
    }

    /// JSON pointer of the pod: `""` for a Pod, the template for a workload.
    pub fn pod_pointer(&self) -> &'static str {
        self.workload.map_or("", |w| w.template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_is_found_by_its_group_and_only_by_it() {
        for w in &WORKLOADS {
            assert_eq!(workload_of(w.group, w.kind), Some(w));
        }
        assert_eq!(workload_of("", "Deployment"), None);
        assert_eq!(workload_of("apps", "ReplicationController"), None);
        assert_eq!(workload_of("", "PodTemplate"), None);
        assert_eq!(
            workload_of("", "ReplicationController").map(|w| w.template),
            Some("/spec/template")
        );
    }

    #[test]
    fn groups_come_from_the_api_version() {
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of(""), "");
    }

    #[test]
    fn the_request_namespace_wins_then_the_object_then_the_fallback() {
        let pod = json!({"metadata": {"generateName": "agent-", "namespace": "obj"}});
        let t = ObjectId::of("", "Pod", &pod, "req", "fallback").unwrap();
        assert_eq!((t.namespace.as_str(), t.name.as_str()), ("req", "agent-*"));
        assert_eq!(t.display, "req/agent-*");
        let t = ObjectId::of("", "Pod", &pod, "", "fallback").unwrap();
        assert_eq!(t.namespace, "obj");
        let t = ObjectId::of("", "Pod", &json!({}), "", "fallback").unwrap();
        assert_eq!(t.display, "fallback/<unnamed>");
    }

    #[test]
    fn workloads_are_named_by_their_template() {
        let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "agents", "namespace": "ns"}});
        let t = ObjectId::of_document(&rc, "default").unwrap();
        assert_eq!(t.display, "ns/agents (ReplicationController pod template)");
        assert_eq!(t.pod_pointer(), "/spec/template");
        let other = json!({"apiVersion": "example.com/v1", "kind": "Deployment"});
        assert_eq!(ObjectId::of_document(&other, "default"), None);
    }
}
