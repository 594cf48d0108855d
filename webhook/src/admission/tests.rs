//! The mutating path parses only what a decision reads (`raw::PodObject`); these tests hold
//! it to deciding exactly as the whole object would: same patch or denial, same pool
//! violations, for every AdmissionReview made from the golden fixtures and for generated
//! pods, malformed ones included.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::config::MutationConfig;
use crate::offline::ClusterState;
use crate::pod::display_name;

/// The ServiceAccounts and AgentPools of the golden fixtures, as the fuzz target uses them.
fn admitter() -> Admitter {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let text = std::fs::read_to_string(root.join("state.yaml")).expect("fuzz/state.yaml");
    let mut docs = Vec::new();
    crate::inputs::parse_into(&mut docs, "state.yaml", &text).expect("state.yaml parses");
    let state = ClusterState::from_documents(&docs, "default").expect("a cluster state");
    Admitter {
        config: MutationConfig::new("00000000-0000-0000-0000-000000000001"),
        service_accounts: ServiceAccounts::from_store(state.accounts),
        policy: state.policy,
    }
}

/// The decision for the object of `body`, parsed whole and parsed for the mutating path.
fn both(admitter: &Admitter, body: &[u8]) -> Option<(String, String)> {
    let whole = decode::<RawObject>(body).ok()?;
    let pruned = decode::<PodObject>(body).expect("decodes whenever the whole object does");
    let namespace = namespace_of(&whole, whole.object.as_ref()?).to_string();
    let decide = |pod: &Value| {
        let display = display_name(pod, &namespace);
        let decision = futures::executor::block_on(admitter.mutate_pod(pod, &namespace, &display));
        format!("{decision:?}")
    };
    let pruned_object = &pruned.object.as_ref()?.0.raw;
    Some((decide(&whole.object.as_ref()?.raw), decide(pruned_object)))
}

fn review(pod: &Value, namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "u"},
            "object": pod
        }
    }))
    .expect("encodes")
}

#[test]
fn the_pruned_parse_decides_like_the_whole_object_for_every_golden_review() {
    let admitter = admitter();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/admission");
    let mut compared = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/admission") {
        let path = entry.expect("a seed").path();
        let body = std::fs::read(&path).expect("readable");
        if let Some((whole, pruned)) = both(&admitter, &body) {
            assert_eq!(whole, pruned, "{}", path.display());
            compared += 1;
        }
    }
    assert!(compared > 50, "only {compared} reviews compared");
}

#[test]
fn malformed_maps_and_lists_are_refused_alike() {
    let admitter = admitter();
    let base = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "labels": {"azure.workload.identity/use": "true"}},
        "spec": {"serviceAccountName": "app", "containers": [{"name": "c"}]}
    });
    let cases: Vec<(&str, Value)> = vec![
        ("/metadata/labels/other", json!(5)),
        ("/metadata/labels/other", Value::Null),
        (
            "/metadata/annotations",
            json!({"x": ["not", "a", "string"]}),
        ),
        ("/metadata/annotations", json!("not a map")),
        ("/spec/containers", json!("not a list")),
        ("/spec/containers/0", json!(7)),
        ("/spec/containers/0/env", json!({"name": "X"})),
        ("/spec/containers/0/volumeMounts", json!(true)),
        ("/spec/volumes", json!({"name": "v"})),
        ("/spec/serviceAccountName", json!(3)),
        ("/spec", json!([])),
        ("/metadata", json!("m")),
    ];
    // A namespace of no pool: the base pod is mutated, so each refusal below is its shape's.
    let (allowed, _) = both(&admitter, &review(&base, "apps")).expect("a pod");
    assert!(allowed.contains("result: Ok(Patch(["), "{allowed}");
    for (pointer, value) in cases {
        let mut pod = base.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        match pod.pointer_mut(parent) {
            Some(Value::Object(m)) => {
                m.insert(key.to_string(), value.clone());
            }
            Some(Value::Array(a)) => a[key.parse::<usize>().expect("an index")] = value.clone(),
            _ => panic!("{pointer}: no parent"),
        }
        let (whole, pruned) = both(&admitter, &review(&pod, "apps")).expect("a pod");
        assert_eq!(whole, pruned, "{pointer} = {value}");
        assert!(
            whole.contains("rule: \"pod-shape\""),
            "{pointer} = {value}: not refused for its shape: {whole}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_pruned_parse_decides_like_the_whole_object_for_generated_pods(
        (pod, _) in crate::mutation::tests::arb_pod(),
        noise in prop::collection::vec(("[a-z]{1,8}", prop::sample::select(vec![json!("s"), json!(1), json!({"k": "v"})])), 0..4),
        pool_label in any::<bool>(),
        azp_pool in any::<bool>(),
    ) {
        let mut pod = pod;
        pod["spec"]["serviceAccountName"] = json!("ado-agent-omtest1");
        for (k, v) in &noise {
            // Fields no decision reads, at every level the parse prunes.
            pod["metadata"]["annotations"][k] = json!("note");
            pod["metadata"][format!("x-{k}")] = v.clone();
            pod["spec"][format!("x-{k}")] = v.clone();
            if let Some(c) = pod["spec"]["containers"].get_mut(0) {
                c[format!("x-{k}")] = v.clone();
            }
        }
        if pool_label {
            pod["metadata"]["labels"]["wi-webhook.dev/agent-pool"] = json!("omtest1");
        }
        if let Some(c) = pod["spec"]["containers"].get_mut(0).filter(|_| azp_pool) {
            c["env"] = json!([{"name": "AZP_POOL", "value": "other-pool"}]);
        }
        let (whole, pruned) = both(&admitter(), &review(&pod, "ado-agents-omtest1")).expect("a pod");
        prop_assert_eq!(whole, pruned);
    }
}

#[test]
fn the_envelope_requires_user_info_and_skips_what_no_decision_reads() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
    let mut body: Value = serde_json::from_slice(&review(&pod, "ns")).unwrap();
    // Fields no decision reads are skipped whatever their shape.
    body["request"]["options"] = json!([1, "not an object"]);
    body["request"]["requestKind"] = json!(7);
    body["request"]["userInfo"] = json!("any JSON value");
    let request = decode::<PodObject>(&serde_json::to_vec(&body).unwrap()).expect("decodes");
    assert_eq!(request.uid, "u");
    assert_eq!(request.namespace.as_deref(), Some("ns"));
    assert_eq!(request.types.api_version, "admission.k8s.io/v1");
    assert!(request.options.is_none() && request.request_kind.is_none());
    // userInfo is still required, as the API defines it.
    body["request"].as_object_mut().unwrap().remove("userInfo");
    let refused = decode::<RawObject>(&serde_json::to_vec(&body).unwrap()).unwrap_err();
    assert!(refused.0.contains("missing field `userInfo`"), "{refused}");
}

/// The fields of a request that decisions read, as text, to compare two parses.
fn read_fields<T: Resource + std::fmt::Debug>(r: &AdmissionRequest<T>) -> String {
    format!(
        "{} {} {:?} {:?} {:?} {} {:?} {:?} {:?} {:?} {}",
        r.types.api_version,
        r.types.kind,
        r.uid,
        r.kind,
        r.resource,
        r.name,
        r.namespace,
        r.sub_resource,
        r.operation,
        (&r.object, &r.old_object),
        r.dry_run
    )
}

#[test]
fn the_envelope_reads_what_kube_core_reads_for_every_fuzz_seed_and_regression() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut compared = 0;
    for dir in ["seeds/admission", "regressions/admission"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("the fuzz folders") {
            let body = std::fs::read(entry.unwrap().path()).unwrap();
            // kube-core's own parse of the same body, the reference.
            let Ok(review) = serde_json::from_slice::<AdmissionReview<RawObject>>(&body) else {
                continue;
            };
            let Ok(reference): Result<AdmissionRequest<RawObject>, _> = review.try_into() else {
                continue;
            };
            let ours = decode::<RawObject>(&body);
            // The one deliberate difference: invalid UTF-8 in a field kube-core skips is
            // refused here (`decode` checks the whole body).
            if std::str::from_utf8(&body).is_err() {
                assert!(ours.is_err(), "accepted a body that is not UTF-8");
                continue;
            }
            if reference.uid.is_empty()
                || reference.types.kind != "AdmissionReview"
                || !VERSIONS.contains(&reference.types.api_version.as_str())
            {
                assert!(ours.is_err(), "accepted what the checks refuse");
                continue;
            }
            let ours = ours.expect("kube-core parses it, so does the envelope");
            assert_eq!(read_fields(&ours), read_fields(&reference));
            compared += 1;
        }
    }
    assert!(compared >= 100, "only {compared} reviews compared");
}
