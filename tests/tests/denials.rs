//! Denials through the API server: the pod is refused with the webhook's one-line
//! message (after the API server's `admission webhook "..." denied the request:`) and its
//! status code, and nothing is stored. Next to each denial, the closest pod that must pass.

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use wi_e2e::pods::*;

const CLIENT_ID: &str = "33333333-3333-3333-3333-333333333333";

struct Setup {
    cluster: wi_e2e::Cluster,
    ns: wi_e2e::TestNamespace,
    pods: Api<Pod>,
    /// Names of the webhook under test's webhooks.
    webhooks: Vec<String>,
}

/// A namespace with ServiceAccount `agent` (annotated with `sa_annotations` on top of the
/// client-id).
async fn setup(prefix: &str, sa_annotations: &[(&str, &str)]) -> Setup {
    let cluster = wi_e2e::cluster().await;
    let ns = cluster.namespace(prefix).await;
    let mut sa = service_account("agent", CLIENT_ID, None);
    let annotations = sa.metadata.annotations.get_or_insert_default();
    for (k, v) in sa_annotations {
        annotations.insert((*k).to_owned(), (*v).to_owned());
    }
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns.name);
    let webhooks = cluster.wi_webhook_names().await.unwrap();
    Setup {
        cluster,
        ns,
        pods,
        webhooks,
    }
}

impl Setup {
    async fn create(&self, pod: Value) -> kube::Result<Pod> {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods.create(&PostParams::default(), &pod).await
    }

    /// Creates `pod`, expects a denial by the webhook with `code`, checks that nothing was
    /// stored, and returns the webhook's message.
    async fn denied(&self, pod: Value, code: u16) -> String {
        let name = pod["metadata"]["name"].as_str().unwrap().to_owned();
        let WebhookDenial {
            status,
            webhook,
            message,
        } = webhook_denial(self.create(pod).await);
        assert!(
            self.webhooks.contains(&webhook),
            "denied by {webhook}, not by the webhook under test ({:?})",
            self.webhooks
        );
        assert_eq!(status.code, code, "{status:?}");
        assert!(
            !message.contains('\n'),
            "the message is one line: {message:?}"
        );
        assert!(
            message.contains(&format!("{}/{name}", self.ns.name)),
            "the message names the pod {}/{name}: {message}",
            self.ns.name
        );
        assert!(self.pods.get_opt(&name).await.unwrap().is_none());
        message
    }
}

fn identity() -> Identity<'static> {
    Identity {
        client_id: Some(CLIENT_ID),
        tenant_id: WEBHOOK_TENANT_ID,
    }
}

/// The expiration must be a whole number of seconds in 3600..=86400; the message
/// names the annotation, the value and the range. The boundaries pass; empty is unset.
#[tokio::test]
async fn bad_token_expiration_on_the_pod_is_denied() {
    let s = setup("e2e-deny-expiration", &[]).await;
    for (i, value) in ["3599", "86401", "0", "-3600", "1h", " "]
        .into_iter()
        .enumerate()
    {
        let pod = labelled_pod_json(
            &format!("bad-{i}"),
            "agent",
            &[(TOKEN_EXPIRATION_ANNOTATION, value)],
        );
        let message = s.denied(pod, 400).await;
        for part in [
            TOKEN_EXPIRATION_ANNOTATION,
            &format!("{value:?}"),
            "3600..=86400",
        ] {
            assert!(message.contains(part), "{part} not in: {message}");
        }
    }
    for value in [3600, 86400] {
        let pod = labelled_pod_json(
            &format!("ok-{value}"),
            "agent",
            &[(TOKEN_EXPIRATION_ANNOTATION, &value.to_string())],
        );
        let stored = s.create(pod).await.unwrap();
        assert_mutated(&stored, identity(), value);
    }
    // Empty is unset, as upstream reads it: the default lifetime, not a denial.
    let pod = labelled_pod_json("empty", "agent", &[(TOKEN_EXPIRATION_ANNOTATION, "")]);
    let stored = s.create(pod).await.unwrap();
    assert_mutated(&stored, identity(), 3600);
}

/// The same rule on the ServiceAccount's annotation; a valid pod annotation wins over it.
#[tokio::test]
async fn bad_token_expiration_on_the_service_account_is_denied_unless_the_pod_overrides_it() {
    let s = setup(
        "e2e-deny-sa-expiration",
        &[(TOKEN_EXPIRATION_ANNOTATION, "100")],
    )
    .await;
    let message = s
        .denied(labelled_pod_json("inherits", "agent", &[]), 400)
        .await;
    for part in [TOKEN_EXPIRATION_ANNOTATION, "\"100\"", "3600..=86400"] {
        assert!(message.contains(part), "{part} not in: {message}");
    }
    let pod = labelled_pod_json(
        "overrides",
        "agent",
        &[(TOKEN_EXPIRATION_ANNOTATION, "7200")],
    );
    let stored = s.create(pod).await.unwrap();
    assert_mutated(&stored, identity(), 7200);
}

/// The proxy port is an integer in 1..65535.
#[tokio::test]
async fn bad_proxy_port_is_denied() {
    let s = setup("e2e-deny-port", &[]).await;
    for (i, value) in ["0", "65536", "http", "-1", ""].into_iter().enumerate() {
        let pod = labelled_pod_json(
            &format!("bad-{i}"),
            "agent",
            &[
                (INJECT_PROXY_ANNOTATION, "true"),
                (PROXY_PORT_ANNOTATION, value),
            ],
        );
        let message = s.denied(pod, 400).await;
        for part in [PROXY_PORT_ANNOTATION, &format!("{value:?}")] {
            assert!(message.contains(part), "{part} not in: {message}");
        }
    }
    let pod = labelled_pod_json(
        "ok",
        "agent",
        &[
            (INJECT_PROXY_ANNOTATION, "true"),
            (PROXY_PORT_ANNOTATION, "8081"),
        ],
    );
    let stored = s.create(pod).await.unwrap();
    let spec = spec(&stored);
    assert_eq!(
        env_value(container(spec, PROXY_INIT), "PROXY_PORT"),
        Some("8081")
    );
    let proxy = container(spec, PROXY);
    assert_eq!(
        proxy.args.as_deref().unwrap_or_default()[0],
        "--proxy-port=8081"
    );
    assert_eq!(proxy.ports.as_ref().unwrap()[0].container_port, 8081);
}

/// The proxy init container would rewrite the node's iptables on a host-network
/// pod: denied, whatever the case of `true`. Without the proxy the same pod is mutated.
#[tokio::test]
async fn host_network_with_the_proxy_is_denied() {
    let s = setup("e2e-deny-hostnet", &[]).await;
    let host_network = |name: &str, inject: &str| {
        let mut pod = labelled_pod_json(name, "agent", &[(INJECT_PROXY_ANNOTATION, inject)]);
        pod["spec"]["hostNetwork"] = true.into();
        pod
    };
    for (name, inject) in [("proxy", "true"), ("proxy-upper", "TRUE")] {
        let message = s.denied(host_network(name, inject), 400).await;
        for part in [INJECT_PROXY_ANNOTATION, "hostNetwork"] {
            assert!(message.contains(part), "{part} not in: {message}");
        }
    }
    let stored = s.create(host_network("no-proxy", "false")).await.unwrap();
    assert_mutated(&stored, identity(), 3600);
    assert_eq!(container_names(spec(&stored)), (vec![], vec!["agent"]));
}

/// A pod whose ServiceAccount does not exist is denied (404) with a message naming
/// the namespace and the ServiceAccount, after the cache miss and one direct GET.
///
/// The API server's own ServiceAccount admission plugin refuses such a pod before any
/// webhook is called, so the webhook meets a missing ServiceAccount only when another
/// mutating webhook, called before it (configurations run in name order), changes
/// `spec.serviceAccountName`. That is what this test sets up.
#[tokio::test]
async fn missing_service_account_is_denied() {
    let s = setup("e2e-deny-sa", &[]).await;

    // Without help, the API server refuses first, and the webhook is never asked.
    let status = api_error(s.create(labelled_pod_json("direct", "missing", &[])).await);
    assert!(
        status.message.contains("error looking up service account")
            && !status.message.contains("denied the request"),
        "{status:?}"
    );

    let hook = s
        .cluster
        .extra_webhook(&format!("aa-e2e-{}", s.ns.name), &s.ns.name, |pod| {
            match pod["metadata"]["annotations"]["wi-e2e/service-account"].as_str() {
                Some(sa) => vec![json!({
                    "op": "replace", "path": "/spec/serviceAccountName", "value": sa,
                })],
                None => vec![],
            }
        })
        .await
        .unwrap();

    let mut pod = labelled_pod_json(
        "renamed-sa",
        "agent",
        &[("wi-e2e/service-account", "missing")],
    );
    pod["metadata"]["name"] = "renamed-sa".into();
    let message = s.denied(pod, 404).await;
    for part in [&format!("{}/missing", s.ns.name), "not found"] {
        assert!(message.contains(part), "{part} not in: {message}");
    }

    // Control: the same webhook naming an existing ServiceAccount lets the pod through.
    let pod = labelled_pod_json("kept-sa", "agent", &[("wi-e2e/service-account", "agent")]);
    let stored = s.create(pod).await.unwrap();
    assert_mutated(&stored, identity(), 3600);
    assert_eq!(hook.seen().len(), 2, "the extra webhook saw both pods");
    hook.remove(&s.cluster).await.unwrap();
}
