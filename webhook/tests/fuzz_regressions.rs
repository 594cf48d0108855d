//! The fuzz target's checks on stable Rust (docs/reliability.md, "Invariants"): every seed
//! of `fuzz/seeds/admission` and every minimised input the fuzzer found
//! (`fuzz/regressions/admission`) goes through `/mutate` and `/validate` with the same
//! checks (`fuzz/check.rs`) and cluster state (`fuzz/state.yaml`) as the fuzz target: no
//! panic, the patch applies, nothing is lost, a Pod stays a Pod, and admitting the result
//! again is allowed and changes nothing. Each regression input also has its exact outcome.

#[path = "../../fuzz/check.rs"]
mod check;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "{} is empty", dir.display());
    out
}

async fn replay(path: &Path) -> Result<Value, String> {
    let admitter = check::admitter();
    let data = std::fs::read(path).expect("readable");
    // The file name is printed with the panic message when a check fails.
    eprintln!("replaying {}", path.display());
    check::check(&admitter, &data).await
}

#[tokio::test]
async fn every_seed_keeps_the_invariants() {
    for path in files("fuzz/seeds/admission") {
        let _ = replay(&path).await;
    }
}

#[tokio::test]
async fn every_regression_input_keeps_the_invariants() {
    for path in files("fuzz/regressions/admission") {
        let _ = replay(&path).await;
    }
}

fn regression(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions/admission")
        .join(name)
}

/// serde_json does not check the strings of fields a decoder skips. A body with invalid
/// UTF-8 in an unknown field of the review was once decided (and the fuzz target, which
/// re-parsed the body into a `Value`, panicked); since every body is checked as UTF-8 first,
/// it is refused (the API server never sends one).
#[tokio::test]
async fn invalid_utf8_in_an_ignored_field_is_refused() {
    assert_refused(
        "invalid-utf8-in-an-ignored-field.json",
        "invalid UTF-8 at line 1 column 290",
    )
    .await;
}

/// The same in a pod field the mutating path skips (an unknown field of the spec): `/mutate`
/// decided the pod while `/validate`, which keeps the whole object, refused the body, and
/// the fuzz target's check that the body decodes again whole failed. Both refuse it now.
#[tokio::test]
async fn invalid_utf8_in_a_skipped_pod_field_is_refused() {
    assert_refused(
        "invalid-utf8-in-a-skipped-pod-field.json",
        "invalid UTF-8 at line 1 column 358",
    )
    .await;
}

/// A number beyond f64 (`2e2222`, valid JSON) in a pod field the mutating path skips:
/// `/mutate` decides the pod without reading the field, and the fuzz target's check that
/// the body decodes again whole (as a `Value`, which cannot hold the number) failed. The
/// check now stops there; `/validate`, which keeps the whole object, refuses the body.
#[tokio::test]
async fn a_number_beyond_f64_in_a_skipped_pod_field_is_decided_on_mutate_and_refused_on_validate() {
    let path = regression("number-out-of-range-in-a-skipped-pod-field.json");
    let review = replay(&path).await.expect("an AdmissionReview");
    assert_eq!(review["response"]["allowed"], json!(true), "{review}");
    assert!(review["response"]["patch"].is_array(), "mutated: {review}");
    let data = std::fs::read(&path).unwrap();
    let refused = check::admitter()
        .review_validate(&data)
        .await
        .expect_err("refused on /validate");
    assert_eq!(
        refused.0,
        "body is not an AdmissionReview: number out of range at line 1 column 370"
    );
}

/// The regression input is refused as not an AdmissionReview, for this reason.
async fn assert_refused(name: &str, why: &str) {
    let refused = replay(&regression(name))
        .await
        .expect_err("not an AdmissionReview");
    assert_eq!(refused, format!("body is not an AdmissionReview: {why}"));
}

/// Pools omtest1 (Enforce) and omtest2 (Audit) share one clientId (a conflict). A pod of
/// omtest2 whose ServiceAccount has no client-id annotation gets the pool's identity from
/// the mutation, which is also omtest1's. The first pass used to allow and mutate it (the
/// conflict is Audit for omtest2) and the reinvocation, seeing the injected AZURE_CLIENT_ID
/// as a literal, denied it under omtest1's Enforce. The identity the webhook injects now
/// counts on the first pass too: denied at once, as the reinvocation would.
#[tokio::test]
async fn a_pool_identity_shared_with_an_enforced_pool_is_denied_on_the_first_pass() {
    let review = replay(&regression(
        "pool-identity-shared-with-an-enforced-pool.json",
    ))
    .await
    .expect("an AdmissionReview");
    let response = &review["response"];
    assert_eq!(response["uid"], json!("fuzz-2"));
    assert_eq!(response["allowed"], json!(false));
    assert_eq!(response["status"]["code"], json!(403));
    assert_eq!(
        response["status"]["message"],
        json!(
            "[pool-policy] pod ado-agents-omtest2/agent-0 violates pool isolation: \
             [identity-of-another-pool] pod ado-agents-omtest2/agent-0 (of pool omtest2) would \
             get identity 6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b of pool omtest1 (team platform) \
             through the clientId of pool omtest2, which the webhook injects; only the pool's \
             own agents may use it: remove it, or run the pod in the pool's namespaces \
             (ado-agents-omtest1); [pool-conflict] pod ado-agents-omtest2/agent-0 belongs to \
             pool omtest2 (team platform-canary), which shares clientId \
             6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b with the older pool omtest1; the newer \
             pool's pods are denied until the AgentPools are fixed: give one of the two \
             AgentPools another managed identity"
        )
    );
    assert!(response.get("patch").is_none());
}
