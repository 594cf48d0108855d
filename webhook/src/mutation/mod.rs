//! The workload-identity mutation of one pod (SPEC section 2), as JSON Patch operations
//! computed on the raw pod JSON.
//!
//! Every operation is an `add`: values appended to lists (`.../-`), lists created where absent,
//! injected containers inserted by index. Nothing is replaced or removed, so fields this build
//! does not know survive, and what we injected is recognised by container name, env var name,
//! volume name and mount path, never by the pod's name: running the mutation on its own output
//! (or after another webhook renamed the pod or added containers) yields an empty patch.

pub mod identity;
pub mod proxy;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde_json::{Value, json};

use crate::config::MutationConfig;
use crate::denial::Denial;
use crate::keys;
use crate::pod::{ContainerList, PodView, container_name, list_field};
use crate::serviceaccounts::SaAnnotations;

pub use identity::{Identity, PoolIdentity};

/// What the mutation knows besides the pod and the webhook's configuration.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Annotations of the pod's ServiceAccount.
    pub sa_annotations: &'a SaAnnotations,
    /// The owning AgentPool's identity, when the pool policy found one.
    pub pool: Option<&'a PoolIdentity>,
}

/// Computes the patch for one pod-shaped object (a Pod or a pod template).
pub fn mutate(pod: &PodView<'_>, ctx: Context<'_>, cfg: &MutationConfig) -> Result<Patch, Denial> {
    let identity = identity::resolve(pod, ctx.sa_annotations, ctx.pool, cfg)?;
    let proxy_port = proxy::requested_port(pod)?;
    let skip = skip_list(pod);
    let env = Injected::new(&identity.env(cfg), cfg);
    let mut ops = Vec::new();

    for list in ContainerList::ALL {
        for (i, c) in pod.containers(list)?.iter().enumerate() {
            if skip.contains(&container_name(c)) {
                continue;
            }
            let at = format!("spec.{}[{i}]", list.field());
            container_ops(&mut ops, c, &at, &env, cfg, pod.display())?;
        }
    }
    volume_op(&mut ops, pod, &identity, cfg)?;
    if let Some(port) = proxy_port {
        proxy_ops(&mut ops, pod, port, &skip, &env, cfg)?;
    }
    Ok(Patch(ops))
}

/// Container names from `skip-containers`, `;`-separated and trimmed.
fn skip_list<'a>(pod: &PodView<'a>) -> Vec<&'a str> {
    pod.annotation(keys::SKIP_CONTAINERS)
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// What every container gets, built once per pod and cloned into each: the env entries
/// (empty values are never injected) and the token mount.
struct Injected {
    env: Vec<(&'static str, Value)>,
    mount: Value,
}

impl Injected {
    fn new(env: &[(&'static str, String)], cfg: &MutationConfig) -> Self {
        Injected {
            env: env
                .iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (*name, json!({"name": name, "value": value})))
                .collect(),
            mount: json!({"name": cfg.volume_name, "mountPath": cfg.mount_path, "readOnly": true}),
        }
    }
}

/// `spec.containers[3]` -> `/spec/containers/3`
fn pointer(at: &str) -> PointerBuf {
    let tokens = at.split(['.', '[']).map(|t| t.trim_end_matches(']'));
    PointerBuf::from_tokens(tokens)
}

fn add(ops: &mut Vec<PatchOperation>, path: PointerBuf, value: Value) {
    ops.push(PatchOperation::Add(AddOperation { path, value }));
}

/// Appends `items` to the list `field` of the object at `at`, creating it where absent.
fn append(ops: &mut Vec<PatchOperation>, at: &str, field: &str, exists: bool, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    let mut path = pointer(at);
    path.push_back(field);
    if exists {
        for item in items {
            let mut p = path.clone();
            p.push_back("-");
            add(ops, p, item);
        }
    } else {
        add(ops, path, Value::Array(items));
    }
}

/// The env vars and token mount one container lacks: env by name, the mount by path.
struct Missing {
    env_exists: bool,
    env: Vec<Value>,
    mounts_exist: bool,
    mount: Option<Value>,
}

fn missing(
    c: &Value,
    at: &str,
    env: &Injected,
    cfg: &MutationConfig,
    display: &str,
) -> Result<Missing, Denial> {
    let existing_env = list_field(c, "env", display, at)?;
    let has_env = |name: &str| {
        existing_env.is_some_and(|e| {
            e.iter()
                .any(|v| v.get("name").and_then(Value::as_str) == Some(name))
        })
    };
    let new_env = env
        .env
        .iter()
        .filter(|(name, _)| !has_env(name))
        .map(|(_, entry)| entry.clone())
        .collect();

    let mounts = list_field(c, "volumeMounts", display, at)?;
    let wanted = cfg.mount_path.trim_end_matches('/');
    let mounted = mounts.is_some_and(|m| {
        m.iter().any(|v| {
            v.get("mountPath")
                .and_then(Value::as_str)
                .is_some_and(|p| p.trim_end_matches('/') == wanted)
        })
    });
    Ok(Missing {
        env_exists: existing_env.is_some(),
        env: new_env,
        mounts_exist: mounts.is_some(),
        mount: (!mounted).then(|| env.mount.clone()),
    })
}

fn container_ops(
    ops: &mut Vec<PatchOperation>,
    c: &Value,
    at: &str,
    env: &Injected,
    cfg: &MutationConfig,
    display: &str,
) -> Result<(), Denial> {
    let m = missing(c, at, env, cfg, display)?;
    append(ops, at, "env", m.env_exists, m.env);
    append(
        ops,
        at,
        "volumeMounts",
        m.mounts_exist,
        m.mount.into_iter().collect(),
    );
    Ok(())
}

/// Gives an injected container (not yet in the pod) the env vars and mount in place.
fn complete_injected(
    mut c: Value,
    env: &Injected,
    cfg: &MutationConfig,
    display: &str,
) -> Result<Value, Denial> {
    let m = missing(&c, "injected", env, cfg, display)?;
    let obj = c.as_object_mut().expect("injected containers are objects");
    let env_list = obj.entry("env").or_insert_with(|| json!([]));
    env_list
        .as_array_mut()
        .expect("injected env is a list")
        .extend(m.env);
    obj.insert(
        "volumeMounts".into(),
        Value::Array(m.mount.into_iter().collect()),
    );
    Ok(c)
}

/// The projected token volume, added even when every container is skipped.
fn volume_op(
    ops: &mut Vec<PatchOperation>,
    pod: &PodView<'_>,
    identity: &Identity,
    cfg: &MutationConfig,
) -> Result<(), Denial> {
    let volumes = match pod.spec().get("volumes") {
        None | Some(Value::Null) => None,
        Some(Value::Array(v)) => Some(v),
        Some(_) => {
            return Err(crate::pod::bad_type(
                pod.display(),
                "spec.volumes",
                "a list",
            ));
        }
    };
    let present = volumes.is_some_and(|v| {
        v.iter()
            .any(|vol| vol.get("name").and_then(Value::as_str) == Some(cfg.volume_name.as_str()))
    });
    if present {
        return Ok(());
    }
    let volume = json!({
        "name": cfg.volume_name,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": cfg.audience,
            "expirationSeconds": identity.token_expiration,
            "path": keys::TOKEN_PATH
        }}]}
    });
    append(ops, "spec", "volumes", volumes.is_some(), vec![volume]);
    Ok(())
}

/// Inserts `azwi-proxy-init` first among the init containers, and `azwi-proxy` right after it
/// (native sidecar) or first among the containers. Runs after every index-based operation on
/// existing containers, since insertion shifts indices.
fn proxy_ops(
    ops: &mut Vec<PatchOperation>,
    pod: &PodView<'_>,
    port: u16,
    skip: &[&str],
    env: &Injected,
    cfg: &MutationConfig,
) -> Result<(), Denial> {
    let finish = |c: Value, name: &str| -> Result<Value, Denial> {
        if skip.contains(&name) {
            Ok(c)
        } else {
            complete_injected(c, env, cfg, pod.display())
        }
    };
    let inits = pod.containers(ContainerList::Init)?;
    let init_field_exists = !matches!(pod.spec().get("initContainers"), None | Some(Value::Null));
    let mut new_inits: Vec<(usize, Value)> = Vec::new();

    // Where the native sidecar goes: right after azwi-proxy-init, wherever that is.
    let mut sidecar_index = inits
        .iter()
        .position(|c| container_name(c) == keys::PROXY_INIT_CONTAINER)
        .map_or(0, |i| i + 1);
    let (init, sidecar) = proxy::containers(port, cfg);
    if !pod.has_container(keys::PROXY_INIT_CONTAINER)? {
        new_inits.push((0, finish(init, keys::PROXY_INIT_CONTAINER)?));
        sidecar_index = 1;
    }
    let sidecar = if pod.has_container(keys::PROXY_CONTAINER)? {
        None
    } else {
        Some(finish(sidecar, keys::PROXY_CONTAINER)?)
    };

    let mut new_regular = None;
    match sidecar {
        Some(s) if cfg.native_sidecar => new_inits.push((sidecar_index, s)),
        Some(s) => new_regular = Some(s),
        None => {}
    }

    if !new_inits.is_empty() {
        if init_field_exists {
            for (index, c) in new_inits {
                add(ops, pointer(&format!("spec.initContainers[{index}]")), c);
            }
        } else {
            let list = new_inits.into_iter().map(|(_, c)| c).collect();
            add(ops, pointer("spec.initContainers"), Value::Array(list));
        }
    }
    if let Some(s) = new_regular {
        let regular_exists = !matches!(pod.spec().get("containers"), None | Some(Value::Null));
        if regular_exists {
            add(ops, pointer("spec.containers[0]"), s);
        } else {
            add(ops, pointer("spec.containers"), json!([s]));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
