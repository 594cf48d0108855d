//! Namespaces no AgentPool may name: kube-system and the webhook's own (the pod webhooks skip
//! them, so a pool there would be unguarded), and namespaces labelled
//! `wi-webhook.dev/ignore: "true"` (opted out of the pod webhooks for the same reason).

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;

use crate::webhookconfig::IGNORE_LABEL;

/// How long the namespace lookup of an AgentPool admission may take.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone, Default)]
pub struct Reserved {
    /// The webhook's own namespace, when known.
    pub own_namespace: Option<String>,
    /// For reading the labels of the namespaces a pool names; `None` offline.
    pub namespaces: Option<Api<Namespace>>,
}

impl Reserved {
    /// Why `namespace` cannot be a pool's, if it cannot. A namespace that cannot be read is
    /// refused too (the check fails closed); one that does not exist yet is fine.
    pub async fn why(&self, namespace: &str) -> Option<String> {
        if let Some(why) = self.fixed(namespace) {
            return Some(why);
        }
        let api = self.namespaces.as_ref()?;
        match tokio::time::timeout(LOOKUP_TIMEOUT, api.get_opt(namespace)).await {
            Ok(Ok(Some(ns))) => ignored(&ns).then(|| {
                format!("namespace {namespace} is labelled {IGNORE_LABEL}=true, so the webhook does not see its pods")
            }),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some(format!("namespace {namespace} cannot be read ({e})")),
            Err(_) => Some(format!("namespace {namespace} cannot be read (timed out)")),
        }
    }
}

impl Reserved {
    /// Why `namespace` cannot be a pool's, by its name alone.
    pub fn fixed(&self, namespace: &str) -> Option<String> {
        if namespace == "kube-system" {
            return Some("kube-system is the cluster's own namespace".into());
        }
        if self.own_namespace.as_deref() == Some(namespace) {
            return Some(format!("{namespace} is the webhook's own namespace"));
        }
        None
    }

    /// The message of an AgentPool that names reserved namespaces (`reasons`).
    pub fn message(pool: &str, reasons: &[String]) -> String {
        format!(
            "AgentPool {pool}: {}; the webhook does not guard pods there, so no pool may run in it: choose another namespace",
            reasons.join("; ")
        )
    }
}

/// Whether the pod webhooks skip `ns` (their selectors exclude exactly the value `true`).
pub fn ignored(ns: &Namespace) -> bool {
    ns.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(IGNORE_LABEL))
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kube_system_and_the_webhooks_namespace_are_reserved() {
        let r = Reserved {
            own_namespace: Some("wi-webhook-system".into()),
            namespaces: None,
        };
        assert!(r.why("kube-system").await.is_some());
        assert!(r.why("wi-webhook-system").await.is_some());
        assert_eq!(r.why("ado-agents-a").await, None);
        assert_eq!(Reserved::default().why("wi-webhook-system").await, None);
    }

    #[test]
    fn only_the_value_true_ignores() {
        let ns = |v: &str| -> Namespace {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n", "labels": {IGNORE_LABEL: v}}
            }))
            .unwrap()
        };
        assert!(ignored(&ns("true")));
        assert!(!ignored(&ns("True")));
        assert!(!ignored(&ns("false")));
    }
}
