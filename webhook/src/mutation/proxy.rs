//! The IMDS proxy: init container `azwi-proxy-init` and sidecar `azwi-proxy`.

use serde_json::{Value, json};

use crate::config::MutationConfig;
use crate::denial::Denial;
use crate::keys;
use crate::pod::PodView;

/// Whether the pod asks for the proxy, and on which port. Only `true` (any case) asks:
/// `false` or any other value injects nothing (unlike upstream, which injects on any value).
pub fn requested_port(pod: &PodView<'_>) -> Result<Option<u16>, Denial> {
    let wanted = pod
        .annotation(keys::INJECT_PROXY)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if !wanted {
        return Ok(None);
    }
    if pod.host_network() {
        return Err(Denial::invalid(
            "proxy-host-network",
            format!(
                "pod {}: annotation {}=true with spec.hostNetwork=true would rewrite the node's iptables; remove the annotation or set hostNetwork to false",
                pod.display(),
                keys::INJECT_PROXY
            ),
        ));
    }
    let port = match pod.annotation(keys::PROXY_PORT) {
        None => keys::DEFAULT_PROXY_PORT,
        Some(v) => match v.trim().parse::<u16>() {
            Ok(p) if p >= 1 => p,
            _ => {
                return Err(Denial::invalid(
                    "proxy-port",
                    format!(
                        "pod {}: annotation {} is {v:?}; set it to a port number in 1..65535",
                        pod.display(),
                        keys::PROXY_PORT
                    ),
                ));
            }
        },
    };
    Ok(Some(port))
}

/// `azwi-proxy-init` for this port and configuration, without the identity env and mount.
pub fn init_container(port: u16, cfg: &MutationConfig) -> Value {
    json!({
        "name": keys::PROXY_INIT_CONTAINER,
        "image": cfg.proxy_init_image,
        "imagePullPolicy": "IfNotPresent",
        "env": [{"name": "PROXY_PORT", "value": port.to_string()}],
        "securityContext": {
            "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            "privileged": true,
            "runAsNonRoot": false,
            "runAsUser": 0
        }
    })
}

/// `azwi-proxy` for this port and configuration, without the identity env and mount.
pub fn sidecar(port: u16, cfg: &MutationConfig) -> Value {
    let level = &cfg.proxy_log_level;
    let mut c = json!({
        "name": keys::PROXY_CONTAINER,
        "image": cfg.proxy_image,
        "imagePullPolicy": "IfNotPresent",
        "args": [format!("--proxy-port={port}"), format!("--log-level={level}")],
        "ports": [{"containerPort": port}],
        "lifecycle": {"postStart": {"exec": {"command": [
            "/proxy", format!("--proxy-port={port}"), "--probe", format!("--log-level={level}")
        ]}}},
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true
        }
    });
    if cfg.native_sidecar {
        c["restartPolicy"] = json!("Always");
    }
    c
}
