//! Any bytes as the body of `POST /mutate` and `POST /validate`: decoding, the pool policy
//! and the mutation, against the ServiceAccounts and AgentPools of the golden fixtures
//! (`fuzz/state.yaml`). Beyond "no panic", every allowed answer with a patch must keep the
//! invariants of SPEC 3: the patch applies to the object, the result is still a Pod, nothing
//! of the input is lost, and admitting the result again changes nothing and denies nothing.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use wi_webhook::admission::{Admitter, RawObject, decode};
use wi_webhook::config::MutationConfig;
use wi_webhook::offline::ClusterState;
use wi_webhook::serviceaccounts::ServiceAccounts;

fn admitter() -> &'static Admitter {
    static ADMITTER: OnceLock<Admitter> = OnceLock::new();
    ADMITTER.get_or_init(|| {
        let mut docs = Vec::new();
        wi_webhook::inputs::parse_into(&mut docs, "state.yaml", include_str!("../state.yaml"))
            .expect("fuzz/state.yaml parses");
        let state = ClusterState::from_documents(&docs, "default").expect("a cluster state");
        Admitter {
            config: MutationConfig::new("00000000-0000-0000-0000-000000000001"),
            service_accounts: ServiceAccounts::from_store(state.accounts),
            policy: state.policy,
        }
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
    })
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
    let response = serde_json::to_value(review).ok()?;
    let bytes = response["response"]["patch"].as_array()?.iter();
    let bytes: Vec<u8> = bytes.map(|b| b.as_u64().unwrap_or(0) as u8).collect();
    Some(serde_json::from_slice(&bytes).expect("the patch is a JSON Patch"))
}

fuzz_target!(|data: &[u8]| {
    let admitter = admitter();
    runtime().block_on(async {
        let _ = admitter.review_validate(data).await;
        let Ok(outcome) = admitter.review(data).await else {
            return;
        };
        let review = serde_json::to_value(&outcome.review).expect("the answer encodes");
        assert_eq!(review["response"]["uid"], json!(outcome.uid));
        let Some(patch) = patch_of(&review) else {
            return;
        };
        assert_eq!(
            review["response"]["allowed"],
            json!(true),
            "a denial has no patch"
        );
        let request = decode::<RawObject>(data).expect("decoded once, decodes again");
        let object = request.object.expect("a patch implies an object").raw;
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
        // Reinvocation: the mutated pod, admitted again, changes nothing and is not denied.
        let mut again: Value = serde_json::from_slice(data).expect("JSON");
        again["request"]["object"] = mutated;
        let again = serde_json::to_vec(&again).expect("encodes");
        let second = admitter.review(&again).await.expect("still a review");
        let second = serde_json::to_value(&second.review).expect("encodes");
        assert_eq!(second["response"]["allowed"], json!(true), "{second}");
        if let Some(patch) = patch_of(&second) {
            assert!(patch.0.is_empty(), "mutating twice changed: {patch:?}");
        }
    });
});
