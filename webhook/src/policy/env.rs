//! A container's environment as the kubelet will build it, so the pool checks judge the value
//! a process sees rather than the first entry of a name: `envFrom` first, then `env` in
//! order, the last entry of a name winning; `$(VAR)` in a `value` expanded from the entries
//! before it (`$$` is a `$`, a reference to an undefined name stays literal); `fieldRef`
//! resolved from the pod itself. What the webhook cannot know (Secrets, ConfigMaps, `envFrom`,
//! fields set after admission) is [`Resolved::Unknown`].

use std::collections::HashMap;

use serde_json::Value;

use crate::pod::PodView;

/// The value of one variable as the container will see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Known(String),
    /// Not knowable at admission; says where it comes from.
    Unknown(String),
}

/// The resolved variables of one container.
#[derive(Debug, Default)]
pub struct ContainerEnv {
    vars: HashMap<String, Resolved>,
    /// Whether `envFrom` may define names this view cannot see.
    env_from: bool,
}

impl ContainerEnv {
    /// Resolves `container`'s `envFrom` and `env` in the kubelet's order.
    pub fn of(container: &Value, pod: &PodView<'_>, namespace: &str) -> ContainerEnv {
        let mut out = ContainerEnv {
            env_from: container
                .get("envFrom")
                .and_then(Value::as_array)
                .is_some_and(|l| !l.is_empty()),
            ..ContainerEnv::default()
        };
        let Some(Value::Array(entries)) = container.get("env") else {
            return out;
        };
        for e in entries {
            let Some(name) = e.get("name").and_then(Value::as_str) else {
                continue;
            };
            let value = match e.get("valueFrom").filter(|v| !v.is_null()) {
                Some(from) => value_from(from, pod, namespace),
                None => out.expand(e.get("value").and_then(Value::as_str).unwrap_or("")),
            };
            out.vars.insert(name.to_string(), value);
        }
        out
    }

    /// The variable `name` as set by `env`; `None` when no entry names it.
    pub fn get(&self, name: &str) -> Option<&Resolved> {
        self.vars.get(name)
    }

    /// `$(NAME)` expansion of a literal value, as the kubelet's `expansion.Expand`.
    fn expand(&self, input: &str) -> Resolved {
        let mut out = String::new();
        let mut unknown: Option<String> = None;
        let mut rest = input;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if after.is_empty() {
                out.push('$');
                rest = after;
                break;
            }
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('(') {
                match tail.find(')') {
                    Some(end) => {
                        let name = &tail[..end];
                        match self.lookup(name) {
                            Some(Resolved::Known(v)) => out.push_str(&v),
                            Some(Resolved::Unknown(why)) => {
                                unknown.get_or_insert(format!("from $({name}), which comes {why}"));
                            }
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        rest = &tail[end + 1..];
                    }
                    None => {
                        out.push_str("$(");
                        rest = tail;
                    }
                }
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        match unknown {
            Some(why) => Resolved::Unknown(why),
            None => Resolved::Known(out),
        }
    }

    fn lookup(&self, name: &str) -> Option<Resolved> {
        match self.vars.get(name) {
            Some(v) => Some(v.clone()),
            None if self.env_from => Some(Resolved::Unknown("from envFrom".into())),
            None => None,
        }
    }
}

/// `valueFrom`: a `fieldRef` the pod itself answers, else unknown.
fn value_from(from: &Value, pod: &PodView<'_>, namespace: &str) -> Resolved {
    let Some(path) = from.pointer("/fieldRef/fieldPath").and_then(Value::as_str) else {
        let source = from
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_else(|| "valueFrom".into());
        return Resolved::Unknown(format!("from valueFrom.{source}"));
    };
    let unknown = || Resolved::Unknown(format!("from fieldRef {path}"));
    let keyed = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['").or_else(|| r.strip_prefix("[\"")))
            .and_then(|r| r.strip_suffix("']").or_else(|| r.strip_suffix("\"]")))
    };
    let known = |v: Option<&str>| Resolved::Known(v.unwrap_or_default().to_string());
    match path {
        "metadata.namespace" => Resolved::Known(namespace.to_string()),
        "metadata.name" => match pod.name() {
            Some(n) if !n.is_empty() => Resolved::Known(n.to_string()),
            // generateName: the name is chosen after admission.
            _ => unknown(),
        },
        "spec.serviceAccountName" => known(pod.service_account().ok()),
        _ => {
            if let Some(key) = keyed("metadata.annotations") {
                known(pod.annotation(key))
            } else if let Some(key) = keyed("metadata.labels") {
                known(pod.label(key))
            } else {
                unknown()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(container: Value) -> ContainerEnv {
        let pod = json!({
            "metadata": {"name": "p", "labels": {"l": "from-label"},
                          "annotations": {"id": "from-annotation"}},
            "spec": {"serviceAccountName": "agent", "containers": [container.clone()]},
        });
        let view = PodView::new(&pod, "ns/p").unwrap();
        ContainerEnv::of(&container, &view, "ns")
    }

    fn known(v: &str) -> Option<Resolved> {
        Some(Resolved::Known(v.into()))
    }

    #[test]
    fn last_entry_wins_and_expansion_sees_earlier_entries() {
        let e = env(json!({"name": "c", "env": [
            {"name": "X", "value": "one"},
            {"name": "Y", "value": "$(X)-$(Z)-$$(X)-$$$(X)-$(-$"},
            {"name": "X", "value": "two"},
            {"name": "Z", "value": "$(X)"},
        ]}));
        assert_eq!(e.get("X").cloned(), known("two"));
        assert_eq!(e.get("Y").cloned(), known("one-$(Z)-$(X)-$one-$(-$"));
        assert_eq!(e.get("Z").cloned(), known("two"));
        assert_eq!(e.get("W"), None);
    }

    #[test]
    fn field_refs_are_read_from_the_pod() {
        let field = |path: &str| {
            env(json!({"name": "c", "env": [
                {"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}},
            ]}))
            .get("V")
            .cloned()
        };
        assert_eq!(
            field("metadata.annotations['id']"),
            known("from-annotation")
        );
        assert_eq!(field("metadata.labels['l']"), known("from-label"));
        assert_eq!(field("metadata.labels['absent']"), known(""));
        assert_eq!(field("metadata.name"), known("p"));
        assert_eq!(field("metadata.namespace"), known("ns"));
        assert_eq!(field("spec.serviceAccountName"), known("agent"));
        assert!(matches!(field("status.podIP"), Some(Resolved::Unknown(_))));
        assert!(matches!(field("spec.nodeName"), Some(Resolved::Unknown(_))));
    }

    #[test]
    fn secrets_config_maps_and_env_from_are_unknown() {
        let e = env(
            json!({"name": "c", "envFrom": [{"secretRef": {"name": "s"}}], "env": [
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                {"name": "T", "value": "$(S)"},
                {"name": "U", "value": "$(FROM_SECRET)"},
            ]}),
        );
        assert!(matches!(e.get("S"), Some(Resolved::Unknown(w)) if w.contains("secretKeyRef")));
        assert!(matches!(e.get("T"), Some(Resolved::Unknown(w)) if w.contains("$(S)")));
        assert!(matches!(e.get("U"), Some(Resolved::Unknown(w)) if w.contains("envFrom")));
        // Without envFrom an undefined reference stays literal.
        let e = env(json!({"name": "c", "env": [{"name": "U", "value": "$(FROM_SECRET)"}]}));
        assert_eq!(e.get("U").cloned(), known("$(FROM_SECRET)"));
    }
}
