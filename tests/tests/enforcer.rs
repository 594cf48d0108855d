//! What the AKS Admissions Enforcer does to webhook configurations, against the real API
//! server: it edits each webhook's namespaceSelector (adding control-plane exclusions) with
//! its own field manager. Our configurations carry `admissions.enforcer/disabled: "true"` so
//! that it leaves them alone; when a selector was edited anyway, re-applying our manifests
//! server-side reports the conflict and changes nothing, and `--force-conflicts` restores
//! our selector exactly (docs/migration.md).
//!
//! The configurations under test are the webhook's own (`wi_webhook::webhookconfig`), under
//! a name of their own and with an objectSelector no object carries, so that the rest of the
//! suite, running meanwhile, never calls them.

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Api;
use serde_json::{Value, json};
use wi_webhook::webhookconfig::{self, ENFORCER_OPT_OUT, Options, Target};

const FIELD_MANAGER: &str = "wi-webhook-install";
const ENFORCER: &str = "aks-admissions-enforcer";

/// What the enforcer adds to each webhook's namespaceSelector.
fn enforcer_expressions() -> Vec<Value> {
    vec![
        json!({"key": "control-plane", "operator": "DoesNotExist"}),
        json!({"key": "kubernetes.azure.com/managedby", "operator": "NotIn", "values": ["aks"]}),
    ]
}

/// Our two configurations, renamed to `name`, calling nothing anyone creates.
fn manifests(name: &str) -> Vec<Value> {
    let options = Options {
        target: Target::Url("https://127.0.0.1:1".into()),
        ca_bundle: None,
        timeout_seconds: 10,
    };
    let never = json!({"matchLabels": {"wi-e2e.dev/enforcer-test": name}});
    [
        serde_json::to_value(webhookconfig::mutating(&options)).unwrap(),
        serde_json::to_value(webhookconfig::validating(&options)).unwrap(),
    ]
    .into_iter()
    .zip([
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ])
    .map(|(mut v, kind)| {
        v["apiVersion"] = "admissionregistration.k8s.io/v1".into();
        v["kind"] = kind.into();
        v["metadata"]["name"] = name.into();
        for hook in v["webhooks"].as_array_mut().unwrap() {
            hook["objectSelector"] = never.clone();
            hook["failurePolicy"] = "Ignore".into();
        }
        v
    })
    .collect()
}

fn yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(wi_webhook::yaml::to_string)
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `(resource, webhook index, selector)` of every webhook with a namespaceSelector.
fn selectors(docs: &[Value]) -> Vec<(&'static str, usize, Value)> {
    let mut out = Vec::new();
    for (doc, resource) in docs.iter().zip([
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ]) {
        for (i, hook) in doc["webhooks"].as_array().unwrap().iter().enumerate() {
            // The API server stores an absent selector as `{}` (every namespace).
            let selector = &hook["namespaceSelector"];
            if !selector.is_null() && selector != &json!({}) {
                out.push((resource, i, hook["namespaceSelector"].clone()));
            }
        }
    }
    out
}

async fn live(cluster: &wi_e2e::Cluster, name: &str) -> Vec<Value> {
    let mutating = Api::<MutatingWebhookConfiguration>::all(cluster.client.clone())
        .get(name)
        .await
        .unwrap();
    let validating = Api::<ValidatingWebhookConfiguration>::all(cluster.client.clone())
        .get(name)
        .await
        .unwrap();
    vec![
        serde_json::to_value(mutating).unwrap(),
        serde_json::to_value(validating).unwrap(),
    ]
}

#[tokio::test]
async fn an_enforcer_edit_is_a_conflict_that_a_forced_server_side_apply_undoes() {
    let cluster = wi_e2e::cluster().await;
    let salt = std::process::id();
    let name = format!("wi-e2e-enforcer-{salt:x}");
    let docs = manifests(&name);
    let ours = selectors(&docs);
    assert!(
        ours.len() >= 3,
        "the pod and workload webhooks have selectors"
    );

    let apply = |force: bool| {
        let mut args = vec![
            "apply",
            "--server-side",
            "--field-manager",
            FIELD_MANAGER,
            "-f",
            "-",
        ];
        if force {
            args.push("--force-conflicts");
        }
        let text = yaml(&docs);
        let cluster = &cluster;
        async move { cluster.kubectl(&args, &text).await.unwrap() }
    };
    let first = apply(false).await;
    assert!(first.success, "first apply: {}", first.stderr);

    // Applied as generated: the opt-out label is there.
    for doc in live(&cluster, &name).await {
        assert_eq!(
            doc["metadata"]["labels"][ENFORCER_OPT_OUT.0], ENFORCER_OPT_OUT.1,
            "{:#}",
            doc["metadata"]
        );
    }

    // The enforcer's edit, with its own field manager (an update, as a controller makes it).
    for (resource, index, _) in &ours {
        let ops: Vec<Value> = enforcer_expressions()
            .into_iter()
            .map(|e| {
                json!({
                    "op": "add",
                    "path": format!("/webhooks/{index}/namespaceSelector/matchExpressions/-"),
                    "value": e,
                })
            })
            .collect();
        let out = cluster
            .kubectl(
                &[
                    "patch",
                    resource,
                    &name,
                    "--type=json",
                    "--field-manager",
                    ENFORCER,
                    "-p",
                    &serde_json::to_string(&ops).unwrap(),
                ],
                "",
            )
            .await
            .unwrap();
        assert!(out.success, "patch {resource}: {}", out.stderr);
    }
    let edited = selectors(&live(&cluster, &name).await);
    for ((_, _, mine), (_, _, theirs)) in ours.iter().zip(&edited) {
        assert_ne!(mine, theirs, "the edit took");
    }

    // Re-applying our manifests: the selector is the enforcer's now, so server-side apply
    // stops with a conflict naming it, and changes nothing.
    let again = apply(false).await;
    assert!(!again.success, "a silent success would hide the edit");
    assert!(
        again.stderr.contains("conflict") && again.stderr.contains(ENFORCER),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("namespaceSelector"),
        "{}",
        again.stderr
    );
    assert_eq!(selectors(&live(&cluster, &name).await), edited);

    // Forced: our selectors, exactly, and the label.
    let forced = apply(true).await;
    assert!(forced.success, "forced apply: {}", forced.stderr);
    let restored = live(&cluster, &name).await;
    assert_eq!(selectors(&restored), ours);
    for doc in &restored {
        assert_eq!(doc["metadata"]["labels"][ENFORCER_OPT_OUT.0], "true");
    }

    for resource in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let out = cluster
            .kubectl(&["delete", resource, &name], "")
            .await
            .unwrap();
        assert!(out.success, "{}", out.stderr);
    }
}
