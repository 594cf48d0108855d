//! The answer's JSON in one pass.
//!
//! kube-core serialises `response.patch` (a `Vec<u8>`) as an array of numbers; the API
//! defines it as Go `[]byte`, whose JSON form is a base64 string (SPEC 3). Rather than
//! serialising the review to a `serde_json::Value`, patching that and serialising it again,
//! this writes kube-core's own field order and skip rules directly, the patch as base64
//! streamed into the output.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

/// The encoded answer.
pub fn encode(review: &AdmissionReview<DynamicObject>) -> serde_json::Result<Vec<u8>> {
    // Answers are a few hundred bytes, a few KiB with a patch: one allocation in most cases.
    let mut out = Vec::with_capacity(2048);
    serde_json::to_writer(&mut out, &Review(review))?;
    Ok(out)
}

struct Review<'a>(&'a AdmissionReview<DynamicObject>);

impl Serialize for Review<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(None)?;
        // `types` is flattened: TypeMeta's two fields, in its order.
        map.serialize_entry("apiVersion", &r.types.api_version)?;
        map.serialize_entry("kind", &r.types.kind)?;
        if let Some(request) = &r.request {
            map.serialize_entry("request", request)?;
        }
        if let Some(response) = &r.response {
            map.serialize_entry("response", &Response(response))?;
        }
        map.end()
    }
}

struct Response<'a>(&'a AdmissionResponse);

impl Serialize for Response<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("uid", &r.uid)?;
        map.serialize_entry("allowed", &r.allowed)?;
        map.serialize_entry("status", &r.result)?;
        if let Some(patch) = &r.patch {
            map.serialize_entry("patch", &Base64(patch))?;
            // `patch_type` is private to kube-core; `with_patch`, the only way to set a
            // patch, sets it to JSONPatch together with the patch.
            map.serialize_entry("patchType", "JSONPatch")?;
        }
        if !r.audit_annotations.is_empty() {
            map.serialize_entry("auditAnnotations", &r.audit_annotations)?;
        }
        if let Some(warnings) = &r.warnings {
            map.serialize_entry("warnings", warnings)?;
        }
        map.end()
    }
}

struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Encoded at once into its final size, and written as a raw JSON string: base64's
        // alphabet needs no escaping, and scanning the few KiB of it for escapes (what
        // `serialize_str` and `collect_str` do) was a visible share of a decision.
        let mut text = String::with_capacity(self.0.len().div_ceil(3) * 4 + 2);
        text.push('"');
        STANDARD.encode_string(self.0, &mut text);
        text.push('"');
        RawValue::from_string(text)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use json_patch::jsonptr::PointerBuf;
    use json_patch::{AddOperation, Patch, PatchOperation};
    use kube::core::admission::AdmissionRequest;

    /// What the webhook sent before: the review through a `Value`, the patch replaced.
    fn reference(review: &AdmissionReview<DynamicObject>) -> Vec<u8> {
        use base64::Engine;
        let mut value = serde_json::to_value(review).unwrap();
        if let Some(patch) = review.response.as_ref().and_then(|r| r.patch.as_ref()) {
            value["response"]["patch"] = STANDARD.encode(patch).into();
        }
        serde_json::to_vec(&value).unwrap()
    }

    fn request(api_version: &str) -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(serde_json::json!({
            "apiVersion": api_version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "e911857d-c318-11e8-bbad-025000000001",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": "ns",
                "userInfo": {"username": "u"},
                "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
            }
        }))
        .unwrap();
        review.try_into().unwrap()
    }

    fn patch() -> Patch {
        Patch(vec![PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["spec", "containers", "0", "env"]),
            value: serde_json::json!([{"name": "AZURE_CLIENT_ID", "value": "c\"id\u{e9}"}]),
        })])
    }

    #[test]
    fn identical_to_the_double_serialisation_for_every_kind_of_answer() {
        for api_version in ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"] {
            let req = request(api_version);
            let allowed = AdmissionResponse::from(&req);
            let mutated = AdmissionResponse::from(&req).with_patch(patch()).unwrap();
            let mut warned = AdmissionResponse::from(&req).with_patch(patch()).unwrap();
            warned.warnings = Some(vec!["[rule] a \"quoted\" warning".into()]);
            warned.audit_annotations = [("pool-violations".to_string(), "x; y".to_string())]
                .into_iter()
                .collect();
            let mut denied = AdmissionResponse::from(&req).deny("pod ns/p: no <ServiceAccount>");
            denied.result.code = 403;
            denied.result.reason = "Forbidden".into();
            let invalid = AdmissionResponse::invalid("not an AdmissionReview");
            for response in [allowed, mutated, warned, denied, invalid] {
                let review = response.into_review();
                let ours = encode(&review).unwrap();
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    String::from_utf8(reference(&review)).unwrap()
                );
            }
        }
    }
}
