//! The patch of a mutation: JSON Patch `add` operations whose values are kept as JSON text.
//!
//! The webhook answers with the patch as bytes, so its values are serialised as they are
//! built, and the large ones (the proxy containers) once per configuration and identity
//! (`super::proxy_text`): writing the answer is then copying text, where building
//! `serde_json::Value` trees, cloning them and serialising them again was about 40% of a
//! decision (BENCHMARKS.md, fourth round). [`Patch::to_json_patch`] gives the same
//! operations as a `json_patch::Patch` for whoever applies them (the `mutate` CLI, audits,
//! tests).

use serde::Serialize;
use serde_json::Value;
use serde_json::value::{RawValue, to_raw_value};

/// JSON text of a value. Serialising a `Value` or a list of JSON texts cannot fail: their
/// keys are strings and their numbers finite.
pub fn text<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    to_raw_value(value).expect("a JSON value serialises")
}

/// `add` operations, in the order they apply.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Patch(Vec<Add>);

#[derive(Clone, Debug, Serialize)]
struct Add {
    op: &'static str,
    path: String,
    value: Box<RawValue>,
}

impl Patch {
    /// Adds `value` at `path`, a JSON Pointer built from field names and indices only (no
    /// `~` or `/` to escape).
    pub fn add(&mut self, path: String, value: Box<RawValue>) {
        self.0.push(Add {
            op: "add",
            path,
            value,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patch as the answer carries it (before base64).
    pub fn to_bytes(&self) -> Vec<u8> {
        let size: usize = self
            .0
            .iter()
            .map(|a| a.path.len() + a.value.get().len() + 32)
            .sum();
        let mut out = Vec::with_capacity(size + 2);
        serde_json::to_writer(&mut out, self).expect("strings and JSON texts serialise");
        out
    }

    /// The same operations as a `json_patch::Patch`, to apply them.
    pub fn to_json_patch(&self) -> serde_json::Result<json_patch::Patch> {
        self.0
            .iter()
            .map(|a| {
                let value: Value = serde_json::from_str(a.value.get())?;
                Ok(json_patch::PatchOperation::Add(json_patch::AddOperation {
                    path: json_patch::jsonptr::PointerBuf::parse(&a.path)
                        .map_err(serde::de::Error::custom)?,
                    value,
                }))
            })
            .collect::<serde_json::Result<Vec<_>>>()
            .map(json_patch::Patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bytes_are_what_json_patch_serialises() {
        let mut patch = Patch::default();
        patch.add(
            "/spec/containers/0/env/-".into(),
            text(&json!({"name": "A", "value": "x\"y\u{e9}"})),
        );
        patch.add("/spec/volumes".into(), text(&json!([{"name": "v"}])));
        let ops = patch.to_json_patch().unwrap();
        assert_eq!(ops.0.len(), 2);
        assert_eq!(
            String::from_utf8(patch.to_bytes()).unwrap(),
            serde_json::to_string(&ops).unwrap()
        );
        assert!(Patch::default().is_empty());
        assert_eq!(
            patch.to_bytes().len(),
            serde_json::to_vec(&ops).unwrap().len()
        );
    }
}
