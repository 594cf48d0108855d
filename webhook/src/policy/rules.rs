//! The pool isolation checks, as a pure function of the pod, its
//! ServiceAccount and the pool index. Each check has a stable rule id printed in its message.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::crd::{AZP_POOL, Enforcement, POOL_LABEL};
use super::env::{ContainerEnv, Resolved};
use super::index::{Pool, PoolIndex, client_key};
use crate::guid;
use crate::keys;
use crate::mutation::identity;
use crate::pod::{ContainerList, PodView, container_name};
use crate::serviceaccounts::SaAnnotations;

pub use super::ephemeral::ephemeral_added;

/// Rule ids: stable, printed in every message, used as metric labels.
pub mod rule {
    /// The namespace, the pool label and AZP_POOL name different pools.
    pub const CLAIMS_DISAGREE: &str = "pool-claims-disagree";
    /// The pod's ServiceAccount is not one of its pool's.
    pub const SERVICE_ACCOUNT: &str = "pool-service-account";
    /// The ServiceAccount's client-id annotation is not the pod's pool's identity.
    pub const IDENTITY_MISMATCH: &str = "pool-identity-mismatch";
    /// A pod of no pool, or of pool Q, would get pool P's identity.
    pub const ANOTHER_POOLS_IDENTITY: &str = "identity-of-another-pool";
    /// A container sets AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE or
    /// AZURE_AUTHORITY_HOST to a value other than the pool's (the webhook's, for the last).
    pub const ENV_OVERRIDE: &str = "identity-env-override";
    /// A container sets one of those from a reference the webhook cannot check.
    pub const ENV_REFERENCE: &str = "identity-env-reference";
    /// An ephemeral container is added to a pool's pod.
    pub const EPHEMERAL: &str = "ephemeral-container";
    /// The pod's pool shares a namespace or its client id with an older pool.
    pub const CONFLICT: &str = "pool-conflict";
    /// AZURE_CLIENT_ID or the client-id annotation is neither a GUID nor empty.
    pub const CLIENT_ID_FORMAT: &str = "identity-client-id-format";
    /// An AgentPool names kube-system, the webhook's namespace or an ignored namespace.
    pub const RESERVED_NAMESPACE: &str = "pool-reserved-namespace";
    /// A pool's namespace labelled `wi-webhook.dev/ignore`.
    pub const NAMESPACE_IGNORED: &str = "pool-namespace-ignored";

    /// exec, attach or port-forward into a pool's pod by a subject not in `spec.access.shell`.
    pub const SHELL_ACCESS: &str = "pool-shell-access";
    /// A token requested for a pool's ServiceAccount by neither a kubelet nor a subject in
    /// `spec.access.tokenRequesters`.
    pub const TOKEN_REQUEST: &str = "pool-token-request";
    /// An UPDATE of a pool's pod that changes an image or what the pool checks read.
    pub const POD_UPDATE: &str = "pool-pod-update";
    /// A pod created in a pool's namespace by neither a workload controller nor a subject in
    /// `spec.access.podCreators`.
    pub const POD_ORIGIN: &str = "pool-pod-origin";

    /// Every rule of pods, pod templates and the paths to a pool's token.
    pub const ALL: [&str; 13] = [
        CLAIMS_DISAGREE,
        SERVICE_ACCOUNT,
        IDENTITY_MISMATCH,
        ANOTHER_POOLS_IDENTITY,
        ENV_OVERRIDE,
        ENV_REFERENCE,
        EPHEMERAL,
        CONFLICT,
        CLIENT_ID_FORMAT,
        SHELL_ACCESS,
        TOKEN_REQUEST,
        POD_UPDATE,
        POD_ORIGIN,
    ];

    /// The rules decided by the request (who asks, and what the object was before), which
    /// a manifest or a stored object cannot show: the offline and cluster audits never
    /// report them.
    pub const REQUEST_ONLY: [&str; 4] = [SHELL_ACCESS, TOKEN_REQUEST, POD_UPDATE, POD_ORIGIN];
}

/// One broken rule, attributed to the pool whose enforcement mode decides what it does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub rule: &'static str,
    pub pool: String,
    pub team: String,
    pub enforcement: Enforcement,
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

/// What the checks read besides the pod.
pub struct Subject<'a> {
    pub pod: &'a PodView<'a>,
    pub namespace: &'a str,
    pub service_account: &'a str,
    /// `None` when the ServiceAccount is unknown (a workload created before it).
    pub sa_annotations: Option<&'a SaAnnotations>,
    /// The webhook's tenant, the pool's when the pool names none.
    pub default_tenant: &'a str,
    /// `AZURE_FEDERATED_TOKEN_FILE` as the webhook injects it.
    pub token_file: &'a str,
    /// `AZURE_AUTHORITY_HOST` as the webhook injects it.
    pub authority_host: &'a str,
}

/// The result of the checks for one pod.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// The pool the pod belongs to, when its claims agree on an existing pool.
    pub pool: Option<Arc<Pool>>,
    pub violations: Vec<Violation>,
    /// Findings that concern no pool (a malformed client id outside pool namespaces):
    /// reported by audits, never enforced.
    pub notes: Vec<(&'static str, String)>,
}

pub(super) fn violation(pool: &Pool, rule: &'static str, message: String) -> Violation {
    Violation {
        rule,
        pool: pool.name.clone(),
        team: pool.team.clone(),
        enforcement: pool.enforcement,
        message,
    }
}

/// Every container (init, regular, ephemeral) with its environment as the kubelet builds it.
fn container_envs<'a>(pod: &PodView<'a>, namespace: &str) -> Vec<(&'a str, ContainerEnv)> {
    ContainerList::EVERY
        .into_iter()
        .flat_map(|list| pod.containers(list).unwrap_or(&[]))
        .map(|c| (container_name(c), ContainerEnv::of(c, pod, namespace)))
        .collect()
}

/// The variables a pool's pod may not set to anything but what the webhook injects.
const PROTECTED: [&str; 4] = [
    keys::ENV_CLIENT_ID,
    keys::ENV_TENANT_ID,
    keys::ENV_TOKEN_FILE,
    keys::ENV_AUTHORITY_HOST,
];

/// Authority hosts are URLs: the same host with or without the trailing slash, any case.
fn same_authority(a: &str, b: &str) -> bool {
    a.trim()
        .trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim().trim_end_matches('/'))
}

/// Tenants are GUIDs or domain names.
fn same_tenant(a: &str, b: &str) -> bool {
    match (guid::parse(a), guid::parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.trim().eq_ignore_ascii_case(b.trim()),
    }
}

pub fn evaluate(index: &PoolIndex, s: &Subject<'_>) -> Evaluation {
    let pod = s.pod;
    let who = pod.display();
    let envs = container_envs(pod, s.namespace);
    let mut out = BTreeSet::new();
    let mut notes = Vec::new();

    // The pod's claims: namespace (its oldest pool: a newer one listing it too is in
    // conflict, reported on that pool), pool label, AZP_POOL as the containers see it.
    let in_namespace = index.in_namespace(s.namespace);
    let namespace_pools = &in_namespace[..in_namespace.len().min(1)];
    let mut claims: Vec<(String, String)> = namespace_pools
        .iter()
        .map(|p| (p.name.clone(), format!("namespace {}", s.namespace)))
        .collect();
    if let Some(label) = pod.label(POOL_LABEL).filter(|l| !l.is_empty()) {
        claims.push((label.to_string(), format!("label {POOL_LABEL}={label}")));
    }
    for (container, env) in &envs {
        if let Some(Resolved::Known(v)) = env
            .get(AZP_POOL)
            .filter(|v| **v != Resolved::Known(String::new()))
        {
            claims.push((
                v.to_string(),
                format!("{AZP_POOL}={v} in container {container}"),
            ));
        }
    }
    // Claims the pod makes itself (label, AZP_POOL), after the namespace's.
    let pod_claims = &claims[namespace_pools.len()..];
    let named: BTreeSet<&str> = claims.iter().map(|(p, _)| p.as_str()).collect();
    let claimed: Vec<&Arc<Pool>> = named.iter().filter_map(|n| index.get(n)).collect();
    let list = claims
        .iter()
        .map(|(p, why)| format!("{p} ({why})"))
        .collect::<Vec<_>>()
        .join(", ");
    let disagree = named.len() > 1 && !claimed.is_empty() && !pod_claims.is_empty();
    if disagree {
        for p in &claimed {
            out.insert(violation(p, rule::CLAIMS_DISAGREE, format!(
                "pod {who} claims several pools: {list}; make the namespace, the label {POOL_LABEL} and {AZP_POOL} name one pool (pool {}, team {})",
                p.name, p.team
            )));
        }
    }
    // A label or AZP_POOL naming pool P outside P's namespaces disagrees with the namespace
    // too (which names no pool): such a pod is not P's agent and must not get P's identity.
    let outside = (named.len() == 1)
        .then(|| claimed.first())
        .flatten()
        .filter(|p| !p.namespaces.iter().any(|n| n == s.namespace));
    if let Some(p) = outside {
        let why = pod_claims
            .iter()
            .map(|(_, why)| why.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        out.insert(violation(p, rule::CLAIMS_DISAGREE, format!(
            "pod {who} claims pool {} ({why}) but runs in namespace {}, which is not one of the pool's ({}); run it in one of them or remove the claim (team {})",
            p.name, s.namespace, p.namespaces.join(", "), p.team
        )));
    }
    for p in &claimed {
        for c in index.losing_conflicts_of(p) {
            let fix = if c.field == "namespace" {
                format!(
                    "remove namespace {} from one of the two AgentPools",
                    c.value
                )
            } else {
                "give one of the two AgentPools another managed identity".to_string()
            };
            out.insert(violation(p, rule::CONFLICT, format!(
                "pod {who} belongs to pool {} (team {}), which shares {} {} with the older pool {}; the newer pool's pods are denied until the AgentPools are fixed: {fix}",
                p.name, p.team, c.field, c.value, c.pool
            )));
        }
    }
    let pool = (named.len() == 1 && outside.is_none())
        .then(|| claimed.first().map(|p| (*p).clone()))
        .flatten();

    // The identities the pod would use.
    let sa_client = s
        .sa_annotations
        .and_then(|a| a.get(keys::CLIENT_ID))
        .filter(|c| !c.is_empty());
    let mut used: Vec<(&str, String)> = Vec::new();
    if let Some(c) = sa_client {
        used.push((
            c,
            format!(
                "annotation {} of ServiceAccount {}/{}",
                keys::CLIENT_ID,
                s.namespace,
                s.service_account
            ),
        ));
    }

    // The pool's identity, which the mutation injects when the ServiceAccount has no
    // client-id annotation: checked before the pod gets it, so that a reinvocation (which
    // sees it as a literal env var) decides the same as the first pass.
    let injected = pod.label(keys::USE_LABEL) == Some("true")
        && identity::takes_pool_client_id(s.sa_annotations);
    if let Some(p) = pool
        .as_ref()
        .filter(|p| injected && !p.client_id.is_empty())
    {
        used.push((
            p.client_id.as_str(),
            format!("the clientId of pool {}, which the webhook injects", p.name),
        ));
    }

    if let Some(p) = &pool {
        if !p.service_accounts.iter().any(|sa| sa == s.service_account) {
            out.insert(violation(p, rule::SERVICE_ACCOUNT, format!(
                "pod {who} of pool {} (team {}) runs as ServiceAccount {}, not one of the pool's ({}); set spec.serviceAccountName to one of them or add it to the AgentPool",
                p.name, p.team, s.service_account, p.service_accounts.join(", ")
            )));
        }
        if let Some(c) = sa_client.filter(|c| client_key(c) != client_key(&p.client_id)) {
            out.insert(violation(p, rule::IDENTITY_MISMATCH, format!(
                "pod {who} of pool {} (team {}): ServiceAccount {}/{} has {}={c}, but the pool's identity is {}; annotate the ServiceAccount with the pool's client id or remove the annotation",
                p.name, p.team, s.namespace, s.service_account, keys::CLIENT_ID, p.client_id
            )));
        }
    }

    let expected_tenant = s
        .sa_annotations
        .and_then(|a| a.get(keys::TENANT_ID))
        .cloned()
        .or_else(|| pool.as_ref().and_then(|p| p.tenant_id.clone()))
        .unwrap_or_else(|| s.default_tenant.to_string());
    let mut client_values: Vec<(&str, String)> = sa_client
        .map(|c| {
            (
                c.as_str(),
                format!(
                    "ServiceAccount {}/{} has {}",
                    s.namespace,
                    s.service_account,
                    keys::CLIENT_ID
                ),
            )
        })
        .into_iter()
        .collect();
    for (container, env) in &envs {
        for name in PROTECTED {
            match env.get(name) {
                None => {}
                Some(Resolved::Unknown(why)) => {
                    if let Some(p) = &pool {
                        out.insert(violation(p, rule::ENV_REFERENCE, format!(
                            "pod {who} of pool {} (team {}): container {container} sets {name} {why}, a value the webhook cannot check; remove it and let the webhook inject it",
                            p.name, p.team
                        )));
                    }
                }
                Some(Resolved::Known(value)) => {
                    if name == keys::ENV_CLIENT_ID && !value.is_empty() {
                        used.push((value, format!("env {name} of container {container}")));
                        client_values.push((value, format!("container {container} sets {name}")));
                    }
                    let Some(p) = &pool else { continue };
                    // What the webhook injects itself (the ServiceAccount's client id, reported
                    // above when it is not the pool's) is no override: a stored or reinvoked pod
                    // carries it, and must be judged as it was before.
                    let injects = |v: &str| {
                        pod.selected_for_injection()
                            && sa_client.is_some_and(|c| client_key(c) == client_key(v))
                    };
                    let ok = match name {
                        keys::ENV_CLIENT_ID => {
                            client_key(value) == client_key(&p.client_id) || injects(value)
                        }
                        keys::ENV_TENANT_ID => same_tenant(value, &expected_tenant),
                        keys::ENV_AUTHORITY_HOST => same_authority(value, s.authority_host),
                        _ => value == s.token_file,
                    };
                    if !ok {
                        out.insert(violation(p, rule::ENV_OVERRIDE, format!(
                            "pod {who} of pool {} (team {}): container {container} sets {name}={value}, which is not the pool's; remove it and let the webhook inject it",
                            p.name, p.team
                        )));
                    }
                }
            }
        }
    }

    // A client id Azure would not read as a GUID: refused in a pool's namespaces (whatever
    // it hides), a note for audits elsewhere.
    let home = pool.clone().or_else(|| namespace_pools.first().cloned());
    for (value, how) in client_values {
        if guid::parse(value).is_some() {
            continue;
        }
        let what = format!("pod {who}: {how}={value:?}, which is neither a GUID nor empty");
        match &home {
            Some(p) => {
                out.insert(violation(p, rule::CLIENT_ID_FORMAT, format!(
                    "{what}; write the client id as xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (pool {}, team {})",
                    p.name, p.team
                )));
            }
            None => notes.push((rule::CLIENT_ID_FORMAT, what)),
        }
    }

    // One identity, one pool: nobody else may use a pool's identity. One violation per
    // identity, naming every way the pod takes it (a mutated pod has the ServiceAccount's
    // client id as a literal env var too).
    let mut ways: Vec<(String, Vec<String>)> = Vec::new();
    for (client, how) in used {
        match ways
            .iter_mut()
            .find(|(c, _)| client_key(c) == client_key(client))
        {
            Some((_, hows)) => hows.push(how),
            None => ways.push((client.to_string(), vec![how])),
        }
    }
    for (client, hows) in &ways {
        let how = hows.join(" and ");
        // The oldest pool naming an identity owns it; newer ones are in conflict.
        for owner in index.owning(client).iter().take(1) {
            if pool.as_ref().is_some_and(|p| p.name == owner.name) {
                continue;
            }
            let claims_disagree = pool.is_none() && (disagree || outside.is_some());
            let member = match &pool {
                Some(p) => format!("of pool {}", p.name),
                None if claims_disagree => "of no pool: its pool claims disagree".to_string(),
                None => "of no pool".to_string(),
            };
            let fix = if claims_disagree {
                "make the pod's pool claims agree".to_string()
            } else {
                format!(
                    "remove it, or run the pod in the pool's namespaces ({})",
                    owner.namespaces.join(", ")
                )
            };
            out.insert(violation(owner, rule::ANOTHER_POOLS_IDENTITY, format!(
                "pod {who} ({member}) would get identity {client} of pool {} (team {}) through {how}; only the pool's own agents may use it: {fix}",
                owner.name, owner.team
            )));
        }
    }

    Evaluation {
        pool,
        violations: out.into_iter().collect(),
        notes,
    }
}
