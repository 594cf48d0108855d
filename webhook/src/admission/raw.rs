//! The admitted object kept as raw JSON, so that nothing this build does not know is lost.
//!
//! `kube::core::admission` is generic over a `Resource`; this one keeps the whole object as a
//! `serde_json::Value` and fills only the identifying metadata that `Resource::meta` returns.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DynamicResourceScope, Resource};
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawObject {
    pub raw: Value,
    meta: ObjectMeta,
}

impl RawObject {
    pub fn new(raw: Value) -> Self {
        let field = |k: &str| {
            raw.get("metadata")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let meta = ObjectMeta {
            name: field("name"),
            namespace: field("namespace"),
            generate_name: field("generateName"),
            ..ObjectMeta::default()
        };
        RawObject { raw, meta }
    }
}

impl<'de> Deserialize<'de> for RawObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Raw { root: true }.deserialize(d).map(RawObject::new)
    }
}

/// Parses an object as a `Value`, except its `metadata.managedFields`: no decision reads
/// them, and they are a large share of the JSON of a pod a controller creates (every field
/// named once more), so they are skipped while parsing instead of becoming maps
/// (BENCHMARKS.md, decision time). Everything else is kept as it came.
#[derive(Clone, Copy)]
struct Raw {
    /// The object itself (else its `metadata`).
    root: bool,
}

impl<'de> DeserializeSeed<'de> for Raw {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Raw {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = if self.root && key == "metadata" {
                map.next_value_seed(Raw { root: false })?
            } else if !self.root && key == "managedFields" {
                map.next_value::<IgnoredAny>()?;
                continue;
            } else {
                map.next_value()?
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    // Anything but an object is kept as it is (the decision refuses it with a message).
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }
}

impl Serialize for RawObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl Resource for RawObject {
    type DynamicType = ();
    type Scope = DynamicResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn everything_but_the_managed_fields_is_kept() {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": "agent-",
                "labels": {"a": "b"},
                "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}],
                "annotations": {"x": "y"}
            },
            "spec": {"managedFields": [1], "containers": [{"name": "c", "n": 1.5, "t": true}]},
            "unknownNewField": {"metadata": {"managedFields": "kept below the top"}}
        });
        let raw: RawObject = serde_json::from_value(pod.clone()).unwrap();
        let mut expected = pod;
        expected["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(raw.raw, expected);
        assert_eq!(
            serde_json::to_string(&raw.raw).unwrap(),
            serde_json::to_string(&expected).unwrap(),
            "the order of the keys is kept"
        );
        assert_eq!(raw.meta().generate_name.as_deref(), Some("agent-"));
    }

    #[test]
    fn values_that_are_not_objects_are_kept() {
        for v in [
            json!(null),
            json!("s"),
            json!(1),
            json!(-1),
            json!(2.5),
            json!([{"metadata": 1}]),
            json!(false),
        ] {
            let raw: RawObject = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(raw.raw, v);
        }
        let raw: RawObject = serde_json::from_slice(br#"{"metadata": null}"#).unwrap();
        assert_eq!(raw.raw, json!({"metadata": null}));
    }
}
