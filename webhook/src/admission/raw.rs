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
        Raw(&OBJECT).deserialize(d).map(RawObject::new)
    }
}

/// A pod as the mutating path reads it: the fields a decision reads, every
/// other field skipped while parsing.
///
/// The decision never writes the object back: the patch only adds, at paths computed from
/// these fields, and the API server applies it to its own copy, so what is skipped here is
/// never lost. Skipping it is most of the parse of a pod a controller creates (images,
/// resources, probes, security contexts, the ServiceAccount token volume, status, managed
/// fields): `IgnoredAny` only scans those bytes (BENCHMARKS.md, throughput).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodObject(pub RawObject);

impl<'de> Deserialize<'de> for PodObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Raw(&POD)
            .deserialize(d)
            .map(|v| PodObject(RawObject::new(v)))
    }
}

/// Which parts of a JSON object are kept while parsing. A value whose type is not the one
/// the shape expects is kept whole, so that the decision refuses it with its own message.
#[derive(Debug)]
enum Shape {
    /// Kept as it is.
    Whole,
    /// An object: every key kept, except these skipped and these given a shape of their own.
    Except {
        skip: &'static [&'static str],
        nested: &'static [(&'static str, Shape)],
    },
    /// An object: only these keys, each with its shape; every other key skipped.
    Only(&'static [(&'static str, Shape)]),
    /// A list whose items have this shape.
    Items(&'static Shape),
}

/// Any object: everything but `metadata.managedFields`, which no decision reads and which
/// is a large share of an object a controller creates (every field named once more).
static OBJECT: Shape = Shape::Except {
    skip: &[],
    nested: &[(
        "metadata",
        Shape::Except {
            skip: &["managedFields"],
            nested: &[],
        },
    )],
};

/// A container as the mutation and the pool checks read it: its name, env and mounts.
static CONTAINER: Shape = Shape::Only(&[
    ("name", Shape::Whole),
    // `envFrom` decides whether a `$(VAR)` in `env` is known.
    ("envFrom", Shape::Whole),
    ("env", Shape::Whole),
    ("volumeMounts", Shape::Whole),
]);

/// A pod as the mutating decision reads it (`pod::PodView` and its users).
static POD: Shape = Shape::Only(&[
    ("apiVersion", Shape::Whole),
    ("kind", Shape::Whole),
    (
        "metadata",
        Shape::Only(&[
            ("name", Shape::Whole),
            ("generateName", Shape::Whole),
            ("namespace", Shape::Whole),
            // Whole: an env `fieldRef` may read any label or annotation of the pod.
            ("labels", Shape::Whole),
            ("annotations", Shape::Whole),
        ]),
    ),
    (
        "spec",
        Shape::Only(&[
            ("serviceAccountName", Shape::Whole),
            ("serviceAccount", Shape::Whole),
            ("hostNetwork", Shape::Whole),
            ("initContainers", Shape::Items(&CONTAINER)),
            ("containers", Shape::Items(&CONTAINER)),
            ("ephemeralContainers", Shape::Items(&CONTAINER)),
            (
                "volumes",
                Shape::Items(&Shape::Only(&[("name", Shape::Whole)])),
            ),
        ]),
    ),
]);

impl Shape {
    /// The shape of `key` in an object of this shape; `None`: skipped.
    fn of(&self, key: &str) -> Option<&Shape> {
        match self {
            Shape::Whole | Shape::Items(_) => Some(&Shape::Whole),
            Shape::Except { skip, nested } => {
                if skip.contains(&key) {
                    None
                } else {
                    Some(find(nested, key).unwrap_or(&Shape::Whole))
                }
            }
            Shape::Only(fields) => find(fields, key),
        }
    }
}

fn find<'s>(fields: &'s [(&'static str, Shape)], key: &str) -> Option<&'s Shape> {
    fields.iter().find(|(k, _)| *k == key).map(|(_, s)| s)
}

/// Parses a value to the given shape.
#[derive(Clone, Copy)]
struct Raw(&'static Shape);

impl<'de> DeserializeSeed<'de> for Raw {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            // serde_json's own parse, the fastest for what is kept whole.
            Shape::Whole => Value::deserialize(d),
            _ => d.deserialize_any(self),
        }
    }
}

/// An object key, borrowed from the body when it has no escapes: skipped keys cost nothing.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> Visitor<'de> for Raw {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            match self.0.of(&key) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
                Some(shape) => {
                    let value = map.next_value_seed(Raw(shape))?;
                    out.insert(key.into_owned(), value);
                }
            }
        }
        Ok(Value::Object(out))
    }

    // Anything but an object is kept as it is (the decision refuses it with a message).
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let item = match self.0 {
            Shape::Items(item) => Raw(item),
            _ => Raw(&Shape::Whole),
        };
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(item)? {
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

/// `Resource` for the raw object types: only the identifying metadata (`Resource::meta`);
/// kind and version are the request's, not the type's.
macro_rules! raw_resource {
    ($ty:ty, $this:ident => $meta:expr, $meta_mut:expr) => {
        impl Resource for $ty {
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
                let $this = self;
                $meta
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                let $this = self;
                $meta_mut
            }
        }
    };
}

raw_resource!(RawObject, this => &this.meta, &mut this.meta);
raw_resource!(PodObject, this => this.0.meta(), this.0.meta_mut());
raw_resource!(Unread, this => &this.0, &mut this.0);

/// An object scanned (its JSON checked) and dropped: a request read for its envelope alone,
/// as the benchmarks' floor reads it (`wi-load budget`).
#[derive(Clone, Debug, Default)]
pub struct Unread(ObjectMeta);

impl<'de> Deserialize<'de> for Unread {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d)?;
        Ok(Unread::default())
    }
}

impl Serialize for PodObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
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
    fn an_unread_object_is_checked_and_dropped() {
        let unread: Unread = serde_json::from_str(r#"{"spec": {"containers": [1, "x"]}}"#).unwrap();
        assert_eq!(unread.meta().name, None);
        assert!(serde_json::from_str::<Unread>(r#"{"spec": {"containers": [1,}}"#).is_err());
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
