//! Where the token is mounted: this project's layout, or upstream v1.6.0's for teams whose
//! tooling expects its `AZURE_FEDERATED_TOKEN_FILE`. Also how a pod that upstream's webhook
//! already mutated (both webhooks registered during a cut-over) is recognised, so that it
//! keeps upstream's volume and paths instead of getting a second token volume.

use std::borrow::Cow;

use clap::ValueEnum;
use serde_json::Value;

use crate::config::MutationConfig;
use crate::pod::PodView;

/// The token volume's layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TokenLayout {
    /// Volume `azure-identity-token` (or --token-volume-name) mounted at
    /// /var/run/secrets/azure/tokens (or --token-mount-path), token file
    /// `azure-identity-token`.
    #[default]
    Default,
    /// As upstream v1.6.0: volume `azure-workload-identity-reserved-<hash of the pod name>`
    /// mounted at /var/run/secrets/azure/wi, token file `token/azure-identity-token`.
    Upstream,
}

/// Prefix of upstream's token volume; the rest is the hash of the pod's name.
pub const UPSTREAM_VOLUME_PREFIX: &str = "azure-workload-identity-reserved-";
pub const UPSTREAM_MOUNT_PATH: &str = "/var/run/secrets/azure/wi";
pub const UPSTREAM_TOKEN_PATH: &str = "token/azure-identity-token";

/// Upstream's volume name for a pod: the prefix and the first hex digits of the SHA-256 of
/// its name (of `generateName + " (prefix)"` when it has none yet), 63 characters in all.
pub fn upstream_volume_name(pod: &PodView<'_>) -> String {
    let name = match pod.metadata_str("name").filter(|n| !n.is_empty()) {
        Some(n) => n.to_owned(),
        None => format!(
            "{} (prefix)",
            pod.metadata_str("generateName").unwrap_or("")
        ),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{UPSTREAM_VOLUME_PREFIX}{}",
        &hex[..63 - UPSTREAM_VOLUME_PREFIX.len()]
    )
}

/// The name of a token volume upstream's webhook already added to the pod, if any. Its name
/// is reserved by upstream, and what is recognised is the name only, as upstream does.
pub fn upstream_volume<'a>(pod: &PodView<'a>) -> Option<&'a str> {
    pod.spec()
        .get("volumes")?
        .as_array()?
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(UPSTREAM_VOLUME_PREFIX))
}

impl MutationConfig {
    /// The configuration this pod is mutated and checked with: the configured one, or
    /// upstream's layout (with the pod's volume name) when the layout is upstream's or the
    /// pod already carries upstream's token volume.
    pub fn for_pod(&self, pod: &PodView<'_>) -> Cow<'_, MutationConfig> {
        let existing = upstream_volume(pod);
        if self.layout == TokenLayout::Default && existing.is_none() {
            return Cow::Borrowed(self);
        }
        let mut cfg = self.clone();
        cfg.volume_name = match existing {
            Some(name) => name.to_owned(),
            None => upstream_volume_name(pod),
        };
        cfg.mount_path = UPSTREAM_MOUNT_PATH.into();
        cfg.token_path = UPSTREAM_TOKEN_PATH.into();
        Cow::Owned(cfg)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn view(pod: &Value) -> PodView<'_> {
        PodView::new(pod, "ns/p").unwrap()
    }

    #[test]
    fn volume_name_is_upstreams_hash_of_the_pod_name() {
        let pod = json!({"metadata": {"name": "agent-0"}, "spec": {}});
        let name = upstream_volume_name(&view(&pod));
        assert_eq!(name.len(), 63);
        assert!(name.starts_with(UPSTREAM_VOLUME_PREFIX), "{name}");
        let hex = &name[UPSTREAM_VOLUME_PREFIX.len()..];
        let full = ring::digest::digest(&ring::digest::SHA256, b"agent-0");
        let expected: String = full.as_ref()[..15]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, expected);
        // A pod a controller is about to create has only a generateName.
        let templated = json!({"metadata": {"generateName": "agent-"}, "spec": {}});
        let full = ring::digest::digest(&ring::digest::SHA256, b"agent- (prefix)");
        let expected: String = full.as_ref()[..15]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            upstream_volume_name(&view(&templated)),
            format!("{UPSTREAM_VOLUME_PREFIX}{expected}")
        );
    }

    #[test]
    fn upstream_layout_gives_upstreams_token_file() {
        let mut cfg = MutationConfig::new("t");
        cfg.layout = TokenLayout::Upstream;
        let pod = json!({"metadata": {"name": "a"}, "spec": {}});
        let effective = cfg.for_pod(&view(&pod));
        assert_eq!(
            effective.token_file(),
            "/var/run/secrets/azure/wi/token/azure-identity-token"
        );
        assert!(effective.volume_name.starts_with(UPSTREAM_VOLUME_PREFIX));
    }

    #[test]
    fn a_pod_upstream_mutated_keeps_upstreams_volume_whatever_the_layout() {
        let cfg = MutationConfig::new("t");
        let plain = json!({"metadata": {"name": "a"}, "spec": {"volumes": [{"name": "data"}]}});
        assert!(matches!(cfg.for_pod(&view(&plain)), Cow::Borrowed(_)));
        let done = json!({"metadata": {"name": "renamed"}, "spec": {"volumes": [
            {"name": "data"}, {"name": "azure-workload-identity-reserved-0123456789abcdef0123456789abcd"}
        ]}});
        let effective = cfg.for_pod(&view(&done));
        assert_eq!(
            effective.volume_name,
            "azure-workload-identity-reserved-0123456789abcdef0123456789abcd"
        );
        assert_eq!(effective.mount_path, UPSTREAM_MOUNT_PATH);
        assert_eq!(
            effective.token_file(),
            "/var/run/secrets/azure/wi/token/azure-identity-token"
        );
        // With upstream's layout too: a pod renamed after the first pass (reinvocation)
        // keeps the volume it got, not one named after its new name.
        let mut upstream = MutationConfig::new("t");
        upstream.layout = TokenLayout::Upstream;
        assert_eq!(
            upstream.for_pod(&view(&done)).volume_name,
            "azure-workload-identity-reserved-0123456789abcdef0123456789abcd"
        );
    }
}
