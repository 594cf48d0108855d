//! The checks of the `admission` fuzz target, shared with the stable regression test
//! (`webhook/tests/fuzz_regressions.rs`), which replays the seeds and every minimised crash
//! input through them. Any bytes as the body of `POST /mutate` and `POST /validate` against
//! the ServiceAccounts and AgentPools of the golden fixtures (`fuzz/state.yaml`): beyond "no
//! panic", every allowed answer with a patch must keep the invariants of the admission contract: the patch
//! applies to the object, the result is still a Pod, nothing of the input is lost, and
//! admitting the result again changes nothing and denies nothing.

use serde_json::{Value, json};
use wi_webhook::admission::{Admitter, RawObject, decode};
use wi_webhook::config::MutationConfig;
use wi_webhook::offline::ClusterState;
use wi_webhook::serviceaccounts::ServiceAccounts;

/// The cluster state of `fuzz/state.yaml` (every ServiceAccount and AgentPool the golden
/// fixtures define) and the webhook's default configuration.
pub fn admitter() -> Admitter {
    let mut docs = Vec::new();
    wi_webhook::inputs::parse_into(&mut docs, "state.yaml", include_str!("state.yaml"))
        .expect("fuzz/state.yaml parses");
    let state = ClusterState::from_documents(&docs, "default").expect("a cluster state");
    Admitter {
        config: MutationConfig::new("00000000-0000-0000-0000-000000000001"),
        service_accounts: ServiceAccounts::from_store(state.accounts),
        policy: state.policy,
    }
}

/// Every leaf of `a` is in `b` at the same place (arrays: `b` may have more items, and the
/// items of `a` keep their order).
fn contained(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| contained(v, w))),
        (Value::Array(x), Value::Array(y)) => {
            let mut rest = y.iter();
            x.iter().all(|v| rest.any(|w| contained(v, w)))
        }
        _ => a == b,
    }
}

fn patch_of(review: &Value) -> Option<json_patch::Patch> {
    let bytes = review["response"]["patch"].as_array()?.iter();
    let bytes: Vec<u8> = bytes.map(|b| b.as_u64().unwrap_or(0) as u8).collect();
    Some(serde_json::from_slice(&bytes).expect("the patch is a JSON Patch"))
}

/// Decides `data` on both paths and panics if an invariant breaks. Returns the `/mutate`
/// answer as JSON, or the reason the body is not an AdmissionReview (HTTP 400).
pub async fn check(admitter: &Admitter, data: &[u8]) -> Result<Value, String> {
    let _ = admitter.review_validate(data).await;
    let outcome = admitter.review(data).await.map_err(|e| e.0)?;
    let review = serde_json::to_value(&outcome.review).expect("the answer encodes");
    assert_eq!(review["response"]["uid"], json!(outcome.uid));
    let Some(patch) = patch_of(&review) else {
        return Ok(review);
    };
    assert_eq!(
        review["response"]["allowed"],
        json!(true),
        "a denial has no patch"
    );
    let request = match decode::<RawObject>(data) {
        Ok(request) => request,
        // A number beyond f64 (`2e2222`) is valid JSON, but not a `serde_json::Value`: the
        // whole object cannot be read to check the patch against. The mutating path skips
        // such a field without reading it (and the API server applies the patch to its own
        // copy), so it decides the pod; `/validate`, which keeps the whole object, refuses
        // the body (docs/reliability.md, fuzz finding 4).
        Err(e) if e.0.contains("number out of range") => return Ok(review),
        Err(e) => panic!("decoded once, decodes again: {e:?}"),
    };
    let object = request
        .object
        .clone()
        .expect("a patch implies an object")
        .raw;
    let mut mutated = object.clone();
    json_patch::patch(&mut mutated, &patch).expect("the patch applies to its input");
    assert!(contained(&object, &mutated), "the mutation lost a field");
    if object.get("kind") == Some(&json!("Pod")) {
        // Whatever the webhook accepted as a pod, its result must be one too.
        if serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(object.clone()).is_ok() {
            serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(mutated.clone())
                .expect("the result parses as a Pod");
        }
    }
    // Reinvocation: the mutated pod, admitted again, changes nothing and is not denied. The
    // review is built from the decoded request, not by re-parsing `data`: serde_json skips
    // the fields the decoder ignores without validating their strings (invalid UTF-8 there
    // is accepted), which parsing into a `Value` refuses.
    let mut request = serde_json::to_value(&request).expect("the request encodes");
    request["object"] = mutated;
    let again =
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
    let again = serde_json::to_vec(&again).expect("encodes");
    let second = admitter.review(&again).await.expect("still a review");
    let second = serde_json::to_value(&second.review).expect("encodes");
    assert_eq!(second["response"]["allowed"], json!(true), "{second}");
    if let Some(patch) = patch_of(&second) {
        assert!(patch.0.is_empty(), "mutating twice changed: {patch:?}");
    }
    Ok(review)
}
