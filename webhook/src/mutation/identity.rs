//! Which identity a pod gets: client id, tenant and token lifetime.

use crate::config::MutationConfig;
use crate::denial::Denial;
use crate::keys;
use crate::pod::PodView;
use crate::serviceaccounts::SaAnnotations;

/// The identity of the AgentPool that owns the pod, when the pool policy found one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolIdentity {
    pub client_id: String,
    pub tenant_id: Option<String>,
}

/// What the mutation injects, resolved once per pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    pub token_expiration: i64,
}

/// Resolves the identity from the ServiceAccount's annotations, the owning pool and the
/// webhook's tenant, in that order of precedence.
pub fn resolve(
    pod: &PodView<'_>,
    sa_annotations: &SaAnnotations,
    pool: Option<&PoolIdentity>,
    cfg: &MutationConfig,
) -> Result<Identity, Denial> {
    let client_id = if takes_pool_client_id(Some(sa_annotations)) {
        pool.map(|p| p.client_id.clone())
    } else {
        sa_annotations.get(keys::CLIENT_ID).cloned()
    }
    .filter(|v| !v.is_empty());

    // A present tenant annotation wins even when empty: that is how a ServiceAccount opts out.
    let tenant_id = match sa_annotations.get(keys::TENANT_ID) {
        Some(v) => Some(v.clone()),
        None => pool
            .and_then(|p| p.tenant_id.clone())
            .filter(|t| !t.is_empty())
            .or_else(|| Some(cfg.tenant_id.clone())),
    }
    .filter(|v| !v.is_empty());

    // An empty annotation is unset, as upstream reads it: the Pod's falls through to the
    // ServiceAccount's, and that to the default.
    let set = |v: &&String| !v.is_empty();
    let token_expiration = match pod
        .annotation(keys::TOKEN_EXPIRATION)
        .filter(|v| !v.is_empty())
    {
        Some(v) => parse_expiration(pod, "Pod", v)?,
        None => match sa_annotations.get(keys::TOKEN_EXPIRATION).filter(set) {
            Some(v) => parse_expiration(pod, "ServiceAccount", v)?,
            None => keys::DEFAULT_TOKEN_EXPIRATION,
        },
    };

    Ok(Identity {
        client_id,
        tenant_id,
        token_expiration,
    })
}

/// Whether a pod of this ServiceAccount gets its pool's client id: only when the
/// ServiceAccount has no client-id annotation (a present but empty one opts out). The pool
/// checks (`policy::rules`) decide on the same rule before the mutation runs.
pub fn takes_pool_client_id(sa_annotations: Option<&SaAnnotations>) -> bool {
    sa_annotations.is_none_or(|a| a.get(keys::CLIENT_ID).is_none())
}

fn parse_expiration(pod: &PodView<'_>, on: &str, value: &str) -> Result<i64, Denial> {
    match value.trim().parse::<i64>() {
        Ok(secs) if (keys::MIN_TOKEN_EXPIRATION..=keys::MAX_TOKEN_EXPIRATION).contains(&secs) => {
            Ok(secs)
        }
        _ => Err(Denial::invalid(
            "token-expiration",
            format!(
                "pod {}: annotation {} on the {on} is {value:?}; set it to a whole number of seconds in {}..={}",
                pod.display(),
                keys::TOKEN_EXPIRATION,
                keys::MIN_TOKEN_EXPIRATION,
                keys::MAX_TOKEN_EXPIRATION
            ),
        )),
    }
}

impl Identity {
    /// The env vars to inject, in order, leaving out empty values.
    pub fn env(&self, cfg: &MutationConfig) -> Vec<(&'static str, String)> {
        let mut env = Vec::with_capacity(4);
        if let Some(c) = &self.client_id {
            env.push((keys::ENV_CLIENT_ID, c.clone()));
        }
        if let Some(t) = &self.tenant_id {
            env.push((keys::ENV_TENANT_ID, t.clone()));
        }
        env.push((keys::ENV_TOKEN_FILE, cfg.token_file()));
        if !cfg.authority_host.is_empty() {
            env.push((keys::ENV_AUTHORITY_HOST, cfg.authority_host.clone()));
        }
        env
    }
}
