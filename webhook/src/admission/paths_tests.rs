//! `/paths` from AdmissionReview bytes to the answer: the requester comes from `userInfo`,
//! each path reaches its rule, and the pool's enforcement shapes the answer.

use serde_json::{Value, json};

use super::*;
use crate::config::MutationConfig;
use crate::policy::crd::{AccessSubject, Enforcement, SubjectKind};
use crate::policy::{Policy, Pool};
use crate::serviceaccounts::{SaCache, ServiceAccounts};

fn admitter(enforcement: Enforcement) -> Admitter {
    let mut pool = Pool {
        name: "p".into(),
        team: "team-p".into(),
        client_id: "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b".into(),
        tenant_id: None,
        namespaces: vec!["agents".into()],
        service_accounts: vec!["agent".into()],
        enforcement,
        access: Default::default(),
        created: String::new(),
    };
    pool.access.shell = vec![AccessSubject {
        kind: SubjectKind::Group,
        name: "oncall".into(),
        namespace: None,
    }];
    Admitter {
        config: MutationConfig::new("00000000-0000-0000-0000-000000000001"),
        service_accounts: ServiceAccounts::from_store(SaCache::default()),
        policy: Policy::of(&[pool]),
    }
}

/// A review of `resource`/`sub` `operation` in `agents` by `user` in `groups`.
fn review(
    resource: &str,
    sub: Option<&str>,
    operation: &str,
    user: Value,
    extra: Value,
) -> Vec<u8> {
    let mut request = json!({
        "uid": "u1",
        "kind": {"group": "", "version": "v1", "kind": "X"},
        "resource": {"group": "", "version": "v1", "resource": resource},
        "name": "agent-1",
        "namespace": "agents",
        "operation": operation,
        "userInfo": user,
    });
    if let Some(sub) = sub {
        request["subResource"] = sub.into();
    }
    if let (Some(r), Value::Object(extra)) = (request.as_object_mut(), extra) {
        r.extend(extra);
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request,
    }))
    .unwrap()
}

fn answer(admitter: &Admitter, body: &[u8]) -> (Outcome, Value) {
    let outcome = futures::executor::block_on(admitter.review_paths(body)).expect("a review");
    let response = serde_json::to_value(&outcome.review).unwrap()["response"].clone();
    (outcome, response)
}

#[test]
fn exec_is_decided_by_the_requester_from_user_info() {
    let enforce = admitter(Enforcement::Enforce);
    let dev = json!({"username": "dev", "groups": ["devs", "system:authenticated"]});
    let (outcome, response) = answer(
        &enforce,
        &review("pods", Some("exec"), "CONNECT", dev, json!({})),
    );
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("[pool-policy] exec into pod agents/agent-1 violates pool isolation: [pool-shell-access] user dev (groups devs, system:authenticated)"),
        "{message}"
    );
    assert_eq!(
        outcome.user.as_deref(),
        Some("user dev (groups devs, system:authenticated)")
    );
    assert!(outcome.grants.is_empty());

    let oncall = json!({"username": "alice", "groups": ["oncall"]});
    let (outcome, response) = answer(
        &enforce,
        &review("pods", Some("attach"), "CONNECT", oncall.clone(), json!({})),
    );
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(outcome.grants.len(), 1);
    assert_eq!(outcome.pool.as_deref(), Some("p"));
    // A dry run changes nothing, so records nothing.
    let (outcome, _) = answer(
        &enforce,
        &review(
            "pods",
            Some("portforward"),
            "CONNECT",
            oncall,
            json!({"dryRun": true}),
        ),
    );
    assert!(outcome.grants.is_empty());
}

#[test]
fn warn_and_audit_admit_with_a_warning_or_an_audit_annotation() {
    let dev = json!({"username": "dev"});
    let body = review(
        "serviceaccounts",
        Some("token"),
        "CREATE",
        dev,
        json!({"name": "agent"}),
    );
    let (_, response) = answer(&admitter(Enforcement::Warn), &body);
    assert_eq!(response["allowed"], true);
    assert!(
        response["warnings"][0].as_str().unwrap().starts_with(
            "[pool-token-request] user dev may not request a token for ServiceAccount agents/agent"
        ),
        "{response}"
    );
    let (outcome, response) = answer(&admitter(Enforcement::Audit), &body);
    assert_eq!(response["allowed"], true);
    assert!(response.get("warnings").is_none(), "{response}");
    assert!(
        response["auditAnnotations"]["pool-violations"]
            .as_str()
            .unwrap()
            .contains("[pool-token-request]")
    );
    assert_eq!(outcome.violations.len(), 1);
}

#[test]
fn each_path_reaches_its_rule_and_other_requests_pass() {
    let enforce = admitter(Enforcement::Enforce);
    let dev = json!({"username": "dev"});
    let pod = |image: &str| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent-1", "namespace": "agents"}, "spec": {"containers": [{"name": "agent", "image": image}]}});

    let create = review(
        "pods",
        None,
        "CREATE",
        dev.clone(),
        json!({"object": pod("a:1")}),
    );
    let (_, response) = answer(&enforce, &create);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[pool-pod-origin]"),
        "{response}"
    );
    let controller = json!({"username": "system:serviceaccount:kube-system:replicaset-controller"});
    let by_controller = review(
        "pods",
        None,
        "CREATE",
        controller,
        json!({"object": pod("a:1")}),
    );
    assert_eq!(answer(&enforce, &by_controller).1["allowed"], true);

    let update = review(
        "pods",
        None,
        "UPDATE",
        dev.clone(),
        json!({"object": pod("shell:1"), "oldObject": pod("a:1")}),
    );
    let (_, response) = answer(&enforce, &update);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[pool-pod-update]"),
        "{response}"
    );
    let same = review(
        "pods",
        None,
        "UPDATE",
        dev.clone(),
        json!({"object": pod("a:1"), "oldObject": pod("a:1")}),
    );
    assert_eq!(answer(&enforce, &same).1["allowed"], true);
    // An UPDATE without the object before it cannot be judged: a bad review (the API
    // server then applies the webhook's failure policy, Fail).
    let half = review(
        "pods",
        None,
        "UPDATE",
        dev.clone(),
        json!({"object": pod("a:1")}),
    );
    assert!(futures::executor::block_on(enforce.review_paths(&half)).is_err());

    // The API server's proxy to a pool's pod or Service reaches the identity proxy sidecar.
    for resource in ["pods", "services"] {
        let body = review(resource, Some("proxy"), "CONNECT", dev.clone(), json!({}));
        let message = answer(&enforce, &body).1["status"]["message"].clone();
        assert!(
            message.as_str().unwrap().contains("[pool-shell-access]"),
            "{message}"
        );
    }

    // Not one of the paths, or not in a pool's namespace: allowed unchanged.
    for body in [
        review("pods", Some("log"), "CONNECT", dev.clone(), json!({})),
        review("pods", None, "DELETE", dev.clone(), json!({})),
        review(
            "configmaps",
            None,
            "CREATE",
            dev.clone(),
            json!({"object": {"metadata": {"name": "c"}}}),
        ),
        review(
            "pods",
            Some("exec"),
            "CONNECT",
            dev.clone(),
            json!({"namespace": "elsewhere"}),
        ),
    ] {
        let (outcome, response) = answer(&enforce, &body);
        assert_eq!(response["allowed"], true, "{response}");
        assert!(outcome.violations.is_empty());
    }
}

#[test]
fn a_review_without_user_info_is_refused() {
    let mut body: Value = serde_json::from_slice(&review(
        "pods",
        Some("exec"),
        "CONNECT",
        json!({}),
        json!({}),
    ))
    .unwrap();
    body["request"].as_object_mut().unwrap().remove("userInfo");
    let body = serde_json::to_vec(&body).unwrap();
    let err = futures::executor::block_on(admitter(Enforcement::Enforce).review_paths(&body))
        .unwrap_err();
    assert!(err.0.contains("userInfo"), "{err}");
}
