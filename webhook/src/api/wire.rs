//! The answer's JSON in one pass.
//!
//! kube-core serialises `response.patch` (a `Vec<u8>`) as an array of numbers; the API
//! defines it as Go `[]byte`, whose JSON form is a base64 string. Rather than
//! serialising the review to a `serde_json::Value`, patching that and serialising it again,
//! this writes kube-core's own field order and skip rules directly into the output, the
//! patch's base64 among them: its alphabet needs no escaping, so it is encoded straight into
//! the output (SIMD base64), where going through serde would scan or parse the few KiB of it
//! again.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use serde::Serialize;

/// The encoded answer.
pub fn encode(review: &AdmissionReview<DynamicObject>) -> serde_json::Result<Vec<u8>> {
    let patch = review
        .response
        .as_ref()
        .and_then(|r| r.patch.as_ref())
        .map_or(0, |p| p.len().div_ceil(3) * 4);
    let mut out = Writer(Vec::with_capacity(512 + patch));
    out.raw("{");
    // `types` is flattened: TypeMeta's two fields, in its order.
    out.entry("apiVersion", &review.types.api_version)?;
    out.raw(",");
    out.entry("kind", &review.types.kind)?;
    if let Some(request) = &review.request {
        out.raw(",");
        out.entry("request", request)?;
    }
    if let Some(response) = &review.response {
        out.raw(",\"response\":");
        response_into(&mut out, response)?;
    }
    out.raw("}");
    Ok(out.0)
}

fn response_into(out: &mut Writer, r: &AdmissionResponse) -> serde_json::Result<()> {
    out.raw("{");
    out.entry("uid", &r.uid)?;
    out.raw(if r.allowed {
        ",\"allowed\":true,"
    } else {
        ",\"allowed\":false,"
    });
    out.entry("status", &r.result)?;
    if let Some(patch) = &r.patch {
        out.raw(",\"patch\":\"");
        base64_simd::STANDARD.encode_append(patch, &mut out.0);
        // `patch_type` is private to kube-core: the only patch this webhook answers is a
        // JSON Patch (`admission::finish` sets the bytes, `with_patch` both).
        out.raw("\",\"patchType\":\"JSONPatch\"");
    }
    if !r.audit_annotations.is_empty() {
        out.raw(",");
        out.entry("auditAnnotations", &r.audit_annotations)?;
    }
    if let Some(warnings) = &r.warnings {
        out.raw(",");
        out.entry("warnings", warnings)?;
    }
    out.raw("}");
    Ok(())
}

struct Writer(Vec<u8>);

impl Writer {
    fn raw(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    /// `"key":value`; keys are ours and need no escaping.
    fn entry<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> serde_json::Result<()> {
        self.0.push(b'"');
        self.raw(key);
        self.raw("\":");
        serde_json::to_writer(&mut self.0, value)
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
        use base64::engine::general_purpose::STANDARD;
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
            // Every length modulo 3: the base64 padding.
            let odd_sizes = (0..7u8).map(|n| {
                let mut r = AdmissionResponse::from(&req).with_patch(patch()).unwrap();
                r.patch = Some((0..n).map(|i| i.wrapping_mul(97)).collect());
                r
            });
            let responses = [allowed, mutated, warned, denied, invalid];
            for response in responses.into_iter().chain(odd_sizes) {
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
