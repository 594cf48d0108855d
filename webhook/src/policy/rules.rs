//! The pool isolation checks of SPEC section 4, as a pure function of the pod, its
//! ServiceAccount and the pool index. Each check has a stable rule id printed in its message.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::crd::{AZP_POOL, Enforcement, POOL_LABEL};
use super::index::{Pool, PoolIndex, client_key};
use crate::keys;
use crate::mutation::identity;
use crate::pod::{ContainerList, PodView, container_name};
use crate::serviceaccounts::SaAnnotations;

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
    /// A container sets AZURE_CLIENT_ID, AZURE_TENANT_ID or AZURE_FEDERATED_TOKEN_FILE to a
    /// value other than the pool's.
    pub const ENV_OVERRIDE: &str = "identity-env-override";
    /// A container sets one of those from a reference the webhook cannot check.
    pub const ENV_REFERENCE: &str = "identity-env-reference";
    /// An ephemeral container is added to a pool's pod.
    pub const EPHEMERAL: &str = "ephemeral-container";
    /// The pod's pool shares a namespace or its client id with another pool.
    pub const CONFLICT: &str = "pool-conflict";
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

    pub const ALL: [&str; 12] = [
        CLAIMS_DISAGREE,
        SERVICE_ACCOUNT,
        IDENTITY_MISMATCH,
        ANOTHER_POOLS_IDENTITY,
        ENV_OVERRIDE,
        ENV_REFERENCE,
        EPHEMERAL,
        CONFLICT,
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
}

/// The result of the checks for one pod.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// The pool the pod belongs to, when its claims agree on an existing pool.
    pub pool: Option<Arc<Pool>>,
    pub violations: Vec<Violation>,
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

/// Every env entry of every container (init, regular, ephemeral): (container, entry).
fn env_entries<'a>(pod: &PodView<'a>) -> Vec<(&'a str, &'a Value)> {
    let mut out = Vec::new();
    for list in ContainerList::EVERY {
        for c in pod.containers(list).unwrap_or(&[]) {
            if let Some(Value::Array(env)) = c.get("env") {
                out.extend(env.iter().map(|e| (container_name(c), e)));
            }
        }
    }
    out
}

fn env_name(e: &Value) -> &str {
    e.get("name").and_then(Value::as_str).unwrap_or("")
}

/// A literal value (`value`, no `valueFrom`).
fn env_literal(e: &Value) -> Option<&str> {
    if e.get("valueFrom").is_some_and(|v| !v.is_null()) {
        return None;
    }
    Some(e.get("value").and_then(Value::as_str).unwrap_or(""))
}

pub fn evaluate(index: &PoolIndex, s: &Subject<'_>) -> Evaluation {
    let pod = s.pod;
    let who = pod.display();
    let env = env_entries(pod);
    let mut out = BTreeSet::new();

    // The pod's claims: namespace, pool label, AZP_POOL literals.
    let namespace_pools = index.in_namespace(s.namespace);
    let mut claims: Vec<(String, String)> = namespace_pools
        .iter()
        .map(|p| (p.name.clone(), format!("namespace {}", s.namespace)))
        .collect();
    if let Some(label) = pod.label(POOL_LABEL).filter(|l| !l.is_empty()) {
        claims.push((label.to_string(), format!("label {POOL_LABEL}={label}")));
    }
    for (container, e) in &env {
        if env_name(e) == AZP_POOL
            && let Some(v) = env_literal(e).filter(|v| !v.is_empty())
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
    // A namespace listed by two pools is a conflict of the AgentPools (reported below), not a
    // disagreement the pod could fix.
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
        for c in index.conflicts_of(p) {
            let fix = if c.field == "namespace" {
                format!(
                    "remove namespace {} from one of the two AgentPools",
                    c.value
                )
            } else {
                "give one of the two AgentPools another managed identity".to_string()
            };
            out.insert(violation(p, rule::CONFLICT, format!(
                "pod {who} belongs to pool {} (team {}), which shares {} {} with pool {}; pods of conflicting pools are denied until the AgentPools are fixed: {fix}",
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
    for (container, e) in &env {
        let name = env_name(e);
        if ![
            keys::ENV_CLIENT_ID,
            keys::ENV_TENANT_ID,
            keys::ENV_TOKEN_FILE,
        ]
        .contains(&name)
        {
            continue;
        }
        match env_literal(e) {
            None => {
                if let Some(p) = &pool {
                    out.insert(violation(p, rule::ENV_REFERENCE, format!(
                        "pod {who} of pool {} (team {}): container {container} sets {name} from a reference (valueFrom) the webhook cannot check; remove it and let the webhook inject it",
                        p.name, p.team
                    )));
                }
            }
            Some(value) => {
                if name == keys::ENV_CLIENT_ID && !value.is_empty() {
                    used.push((value, format!("env {name} of container {container}")));
                }
                let Some(p) = &pool else { continue };
                let ok = match name {
                    keys::ENV_CLIENT_ID => client_key(value) == client_key(&p.client_id),
                    keys::ENV_TENANT_ID => value.eq_ignore_ascii_case(&expected_tenant),
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
        for owner in index.owning(client) {
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
    }
}

/// `kubectl debug` on a pool's pod: ephemeral containers that `new` has and `old` had not.
pub fn ephemeral_added(
    pool: &Pool,
    new: &PodView<'_>,
    old: Option<&PodView<'_>>,
) -> Option<Violation> {
    let before: BTreeSet<&str> = old
        .map(|o| {
            o.containers(ContainerList::Ephemeral)
                .unwrap_or(&[])
                .iter()
                .map(container_name)
                .collect()
        })
        .unwrap_or_default();
    let added: Vec<&str> = new
        .containers(ContainerList::Ephemeral)
        .unwrap_or(&[])
        .iter()
        .map(container_name)
        .filter(|n| !before.contains(n))
        .collect();
    (!added.is_empty()).then(|| violation(pool, rule::EPHEMERAL, format!(
        "pod {} of pool {} (team {}): ephemeral container {} would read the pool's token; debug a copy of the pod outside the pool's namespaces instead",
        new.display(), pool.name, pool.team, added.join(", ")
    )))
}
