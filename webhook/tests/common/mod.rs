//! Helpers shared by the integration tests of this crate (each test file uses a part).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// A ServiceAccount `namespace/name` with these annotations.
pub fn service_account(
    namespace: &str,
    name: &str,
    annotations: &[(&str, &str)],
) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    }
}

/// A CA and a serving certificate for localhost/127.0.0.1 from the project's own code,
/// written to a fresh directory under the target's temporary directory: (dir, CA PEM).
pub fn certificates(prefix: &str) -> (PathBuf, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let bundle = wi_certs::generate(&wi_certs::GenerateOptions {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![std::net::IpAddr::from([127, 0, 0, 1])],
        ..Default::default()
    })
    .expect("certificates generated");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    bundle.write_dir(&dir).expect("certificates written");
    (dir, bundle.ca.cert)
}

/// An AdmissionReview (v1) of a pod CREATE in `namespace`, as the ReplicaSet controller's
/// request reaches the webhook.
pub fn pod_review(uid: &str, namespace: &str, object: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": object
        }
    })
}

/// Runs the built `wi-webhook` with `args` and `stdin`, without the caller's kubeconfig or
/// tenant: (stdout, stderr, exit code).
pub fn binary(args: &[&str], stdin: &str) -> (String, String, i32) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wi-webhook"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("AZURE_TENANT_ID")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}
