//! Read-only access to a pod (or pod template) held as raw JSON.
//!
//! The mutation never deserialises the pod into typed structs: what this build does not know
//! (fields of a newer Kubernetes) must survive untouched, so we only read the few fields we
//! need and check their types as we go.

use serde_json::{Map, Value};

use crate::denial::Denial;

/// The container lists of a pod spec the webhook touches (ephemeral containers are left alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerList {
    Init,
    Regular,
    /// Added by `kubectl debug`; never mutated, but read by the pool policy.
    Ephemeral,
}

impl ContainerList {
    /// The lists the mutation touches.
    pub const ALL: [ContainerList; 2] = [ContainerList::Init, ContainerList::Regular];
    /// Every list, for checks that must see every container.
    pub const EVERY: [ContainerList; 3] = [
        ContainerList::Init,
        ContainerList::Regular,
        ContainerList::Ephemeral,
    ];

    pub fn field(self) -> &'static str {
        match self {
            ContainerList::Init => "initContainers",
            ContainerList::Regular => "containers",
            ContainerList::Ephemeral => "ephemeralContainers",
        }
    }
}

/// A pod-shaped JSON object: `metadata` and `spec` at the top.
#[derive(Clone, Copy)]
pub struct PodView<'a> {
    metadata: Option<&'a Map<String, Value>>,
    spec: &'a Map<String, Value>,
    /// `namespace/name` (or `namespace/generateName*`) for messages.
    display: &'a str,
}

impl<'a> PodView<'a> {
    /// Checks the shape the mutation relies on; `display` names the pod in messages.
    pub fn new(pod: &'a Value, display: &'a str) -> Result<Self, Denial> {
        let obj = pod
            .as_object()
            .ok_or_else(|| Denial::invalid("pod-shape", format!("pod {display}: not an object")))?;
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(bad_type(display, "metadata", "an object")),
        };
        let spec = match obj.get("spec") {
            Some(Value::Object(s)) => s,
            None | Some(Value::Null) => {
                return Err(Denial::invalid(
                    "pod-shape",
                    format!("pod {display}: has no spec"),
                ));
            }
            Some(_) => return Err(bad_type(display, "spec", "an object")),
        };
        let view = PodView {
            metadata,
            spec,
            display,
        };
        for key in ["annotations", "labels"] {
            view.string_map(key)?;
        }
        Ok(view)
    }

    pub fn display(&self) -> &'a str {
        self.display
    }

    pub fn spec(&self) -> &'a Map<String, Value> {
        self.spec
    }

    fn string_map(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, Denial> {
        match self.metadata.and_then(|m| m.get(key)) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => {
                if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string()) {
                    return Err(bad_type(
                        self.display,
                        &format!("metadata.{key}[{k}]"),
                        "a string",
                    ));
                }
                Ok(Some(m))
            }
            Some(_) => Err(bad_type(
                self.display,
                &format!("metadata.{key}"),
                "a map of strings",
            )),
        }
    }

    /// A string field of the metadata, such as `name` or `generateName`.
    pub fn metadata_str(&self, key: &str) -> Option<&'a str> {
        self.metadata?.get(key)?.as_str()
    }

    pub fn annotation(&self, key: &str) -> Option<&'a str> {
        self.metadata?.get("annotations")?.get(key)?.as_str()
    }

    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.metadata?.get("labels")?.get(key)?.as_str()
    }

    /// `metadata.name`; absent for a pod named by `generateName` or a pod template.
    pub fn name(&self) -> Option<&'a str> {
        self.metadata?.get("name")?.as_str()
    }

    /// Whether the mutating webhook's objectSelector selects this pod; the API server sends
    /// every other pod to the validating webhook for unlabelled pods.
    pub fn selected_for_injection(&self) -> bool {
        self.label(crate::keys::USE_LABEL) == Some(crate::keys::USE_VALUE)
    }

    /// The ServiceAccount the pod runs as; an empty or absent name means `default`.
    pub fn service_account(&self) -> Result<&'a str, Denial> {
        for key in ["serviceAccountName", "serviceAccount"] {
            match self.spec.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(Value::String(s)) => return Ok(s),
                Some(_) => return Err(bad_type(self.display, &format!("spec.{key}"), "a string")),
            }
        }
        Ok("default")
    }

    pub fn host_network(&self) -> bool {
        self.spec.get("hostNetwork").and_then(Value::as_bool) == Some(true)
    }

    /// The containers of one list; absent means empty, anything but a list of objects is refused.
    pub fn containers(&self, list: ContainerList) -> Result<&'a [Value], Denial> {
        let field = list.field();
        match self.spec.get(field) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(items)) => {
                if let Some(i) = items.iter().position(|c| !c.is_object()) {
                    return Err(bad_type(
                        self.display,
                        &format!("spec.{field}[{i}]"),
                        "an object",
                    ));
                }
                Ok(items)
            }
            Some(_) => Err(bad_type(self.display, &format!("spec.{field}"), "a list")),
        }
    }

    /// Whether any init or regular container carries this name.
    pub fn has_container(&self, name: &str) -> Result<bool, Denial> {
        for list in ContainerList::ALL {
            if self
                .containers(list)?
                .iter()
                .any(|c| container_name(c) == name)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

pub fn container_name(c: &Value) -> &str {
    c.get("name").and_then(Value::as_str).unwrap_or("")
}

/// A list-valued field of an object (`env`, `volumeMounts`, `volumes`): absent is `None`.
pub fn list_field<'a>(
    obj: &'a Value,
    field: &str,
    display: &str,
    where_: &str,
) -> Result<Option<&'a Vec<Value>>, Denial> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(bad_type(display, &format!("{where_}.{field}"), "a list")),
    }
}

pub fn bad_type(display: &str, field: &str, expected: &str) -> Denial {
    Denial::invalid(
        "pod-shape",
        format!("pod {display}: {field} must be {expected}; fix the manifest"),
    )
}

/// `namespace/name` or, for a pod a controller is about to create, `namespace/generateName*`.
pub fn display_name(pod: &Value, namespace: &str) -> String {
    crate::workloads::ObjectId::of("", "Pod", pod, namespace, "")
        .expect("a Pod is a target")
        .display
}
