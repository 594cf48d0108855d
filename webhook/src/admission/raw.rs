//! The admitted object kept as raw JSON, so that nothing this build does not know is lost.
//!
//! `kube::core::admission` is generic over a `Resource`; this one keeps the whole object as a
//! `serde_json::Value` and fills only the identifying metadata that `Resource::meta` returns.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DynamicResourceScope, Resource};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

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
        Value::deserialize(d).map(RawObject::new)
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
