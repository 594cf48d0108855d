//! The steps of `doctor`, one function each: what was found, and the fix when it fails.

use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;

use super::{Inputs, Step};
use crate::audit::Auditor;
use crate::config::MutationConfig;
use crate::keys;
use crate::offline::ClusterState;
use crate::pod::{ContainerList, PodView, container_name};
use crate::policy::{Policy, PoolIndex};

fn display(i: &Inputs<'_>) -> String {
    let name = i.pod.pointer("/metadata/name").and_then(Value::as_str);
    format!("{}/{}", i.namespace, name.unwrap_or("?"))
}

fn labelled(i: &Inputs<'_>) -> bool {
    let label = format!("/metadata/labels/{}", keys::USE_LABEL.replace('/', "~1"));
    i.pod.pointer(&label).and_then(Value::as_str) == Some("true")
}

pub fn label(i: &Inputs<'_>) -> Step {
    if labelled(i) {
        return Step::pass(
            "label",
            format!("pod {} has {}=true", display(i), keys::USE_LABEL),
        );
    }
    Step::fail(
        "label",
        format!(
            "pod {} lacks the label {}=\"true\", so the webhook never sees it",
            display(i),
            keys::USE_LABEL
        ),
        format!(
            "add {}: \"true\" to the pod template's metadata.labels and recreate the pod",
            keys::USE_LABEL
        ),
    )
}

/// The audience of the pod's projected token volume, if it has one.
pub fn volume_audience<'a>(pod: &'a Value, volume_name: &str) -> Option<&'a str> {
    let volumes = pod.pointer("/spec/volumes")?.as_array()?;
    let volume = volumes.iter().find(|v| v["name"] == volume_name)?;
    volume
        .pointer("/projected/sources")?
        .as_array()?
        .iter()
        .find_map(|s| s.pointer("/serviceAccountToken/audience")?.as_str())
}

pub fn mutation(i: &Inputs<'_>) -> Step {
    let mut missing = Vec::new();
    let audience = volume_audience(i.pod, i.volume_name);
    if audience.is_none() {
        missing.push(format!("projected token volume {}", i.volume_name));
    }
    let shown = display(i);
    let view = PodView::new(i.pod, &shown).ok();
    let skipped = view
        .as_ref()
        .map(crate::mutation::skip_list)
        .unwrap_or_default();
    let mut checked = 0;
    for list in ContainerList::ALL {
        let containers = view
            .as_ref()
            .and_then(|v| v.containers(list).ok())
            .unwrap_or(&[]);
        for c in containers
            .iter()
            .filter(|c| !skipped.contains(&container_name(c)))
        {
            checked += 1;
            let name = container_name(c);
            let has_env = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["name"] == keys::ENV_TOKEN_FILE);
            if !has_env {
                missing.push(format!("{} in container {name}", keys::ENV_TOKEN_FILE));
            }
            let has_mount = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["name"] == i.volume_name);
            if !has_mount {
                missing.push(format!("mount of {} in container {name}", i.volume_name));
            }
        }
    }
    let wants_proxy = view
        .as_ref()
        .and_then(|v| v.annotation(keys::INJECT_PROXY))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if wants_proxy {
        for name in [keys::PROXY_INIT_CONTAINER, keys::PROXY_CONTAINER] {
            if !view
                .as_ref()
                .and_then(|v| v.has_container(name).ok())
                .unwrap_or(false)
            {
                missing.push(format!("container {name}"));
            }
        }
    }
    if missing.is_empty() {
        let aud = audience.unwrap_or_default();
        if aud != i.audience {
            return Step::fail(
                "mutation",
                format!(
                    "the pod's token volume has audience {aud:?}, not {:?}",
                    i.audience
                ),
                format!(
                    "run the webhook with --audience {:?} (or pass doctor the webhook's --audience), then recreate the pod",
                    i.audience
                ),
            );
        }
        let proxy = if wants_proxy {
            ", proxy init and sidecar"
        } else {
            ""
        };
        return Step::pass(
            "mutation",
            format!(
                "token volume {} (audience {aud}), env and mount in {checked} container(s){proxy}",
                i.volume_name
            ),
        );
    }
    let fix = if labelled(i) {
        "the webhook did not mutate this pod: it was created before the webhook was installed or while it was \
         down, or its namespace is labelled wi-webhook.dev/ignore; fix that, then delete the pod so its controller recreates it"
    } else {
        "label the pod (step above) and recreate it"
    };
    Step::fail(
        "mutation",
        format!("missing: {}", missing.join(", ")),
        fix.to_string(),
    )
}

/// The step, and the client id the agent uses (literal env first, as the Azure SDKs read it).
pub fn service_account(i: &Inputs<'_>, sa: &str) -> (Step, Option<String>) {
    let Some(annotations) = i.service_account else {
        let step = Step::fail(
            "serviceaccount",
            format!("ServiceAccount {}/{sa} does not exist", i.namespace),
            "create it, or set spec.serviceAccountName to the agents' ServiceAccount".into(),
        );
        return (step, None);
    };
    let env_client = literal_env(i.pod, keys::ENV_CLIENT_ID);
    let annotated = annotations
        .get(keys::CLIENT_ID)
        .filter(|c| !c.trim().is_empty());
    let pool = PoolIndex::build(i.pools)
        .in_namespace(i.namespace)
        .first()
        .cloned();
    let tenant = annotations
        .get(keys::TENANT_ID)
        .map(|t| format!(", {}={t}", keys::TENANT_ID))
        .unwrap_or_default();
    let client = env_client
        .map(str::to_string)
        .or_else(|| annotated.cloned())
        .or_else(|| pool.as_ref().map(|p| p.client_id.clone()));
    let step = match (annotated, &pool, &client) {
        (Some(c), _, _) => Step::pass(
            "serviceaccount",
            format!("{}/{sa}: {}={c}{tenant}", i.namespace, keys::CLIENT_ID),
        ),
        (None, Some(p), _) => Step::pass(
            "serviceaccount",
            format!(
                "{}/{sa} has no {}; the identity of pool {} ({}) is injected{tenant}",
                i.namespace,
                keys::CLIENT_ID,
                p.name,
                p.client_id
            ),
        ),
        (None, None, Some(c)) => Step::pass(
            "serviceaccount",
            format!(
                "{}/{sa}; the pod sets AZURE_CLIENT_ID={c} itself",
                i.namespace
            ),
        ),
        (None, None, None) => Step::fail(
            "serviceaccount",
            format!(
                "{}/{sa} has no {} and the pod belongs to no AgentPool: no AZURE_CLIENT_ID is injected",
                i.namespace,
                keys::CLIENT_ID
            ),
            format!(
                "annotate the ServiceAccount with {}: <client id of the managed identity>",
                keys::CLIENT_ID
            ),
        ),
    };
    (step, client)
}

pub fn pool(i: &Inputs<'_>) -> Step {
    if let Some(e) = i.pools_error {
        return Step::note(
            "pool",
            format!("cannot read the AgentPools ({e}): the pool verdict is not checked"),
        );
    }
    let sa = i
        .pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let mut account: ServiceAccount = Default::default();
    account.metadata.name = Some(sa.to_string());
    account.metadata.namespace = Some(i.namespace.to_string());
    account.metadata.annotations = i.service_account.cloned();
    // The webhook injected its tenant into the stored pod: without --tenant-id, that value is
    // taken as the webhook's (so it is not checked), rather than reported as an override.
    let (tenant, unchecked) = match literal_env(i.pod, keys::ENV_TENANT_ID) {
        Some(t) if i.tenant_id.is_empty() => (
            t.to_string(),
            " (AZURE_TENANT_ID taken as the webhook's tenant: pass --tenant-id to check it)",
        ),
        _ => (i.tenant_id.to_string(), ""),
    };
    let state = ClusterState {
        policy: Policy::of(i.pools),
        accounts: crate::serviceaccounts::store_of(i.service_account.map(|_| account)),
    };
    let auditor = Auditor::new(state, MutationConfig::new(tenant));
    let findings = auditor.audit(i.pod, "cluster", i.namespace);
    let pool = PoolIndex::build(i.pools)
        .in_namespace(i.namespace)
        .first()
        .cloned();
    if !findings.is_empty() {
        let all: Vec<String> = findings
            .iter()
            .map(|f| format!("[{}] {}", f.rule, f.message))
            .collect();
        return Step::fail(
            "pool",
            all.join("; "),
            "change what each rule above names (a pool in Enforce mode denies such pods; in Warn or Audit they run but break one identity, one pool)".into(),
        );
    }
    match pool {
        Some(p) => Step::pass(
            "pool",
            format!(
                "pool {} (team {}, {}): no violation{unchecked}",
                p.name,
                p.team,
                p.enforcement.as_str()
            ),
        ),
        None => Step::note(
            "pool",
            "the pod belongs to no AgentPool: plain mutation, no pool checks".into(),
        ),
    }
}

/// The literal value of env var `name` in the first container (init containers first) that
/// sets one; the last entry wins, as the kubelet reads it.
fn literal_env<'a>(pod: &'a Value, name: &str) -> Option<&'a str> {
    ["initContainers", "containers"].iter().find_map(|list| {
        pod.pointer(&format!("/spec/{list}"))?
            .as_array()?
            .iter()
            .find_map(|c| {
                c["env"]
                    .as_array()?
                    .iter()
                    .rev()
                    .find(|e| e["name"] == name)?["value"]
                    .as_str()
            })
    })
}
