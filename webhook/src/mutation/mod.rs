//! The workload-identity mutation of one pod, as JSON Patch operations
//! computed on the raw pod JSON.
//!
//! Every operation is an `add`: values appended to lists (`.../-`), lists created where absent,
//! injected containers inserted by index. Nothing is replaced or removed, so fields this build
//! does not know survive, and what we injected is recognised by container name, env var name,
//! volume name and mount path, never by the pod's name: running the mutation on its own output
//! (or after another webhook renamed the pod or added containers) yields an empty patch.

pub mod identity;
pub mod patch;
pub mod proxy;

use std::cell::RefCell;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::config::MutationConfig;
use crate::denial::Denial;
use crate::keys;
use crate::pod::{ContainerList, PodView, container_name, list_field};
use crate::serviceaccounts::SaAnnotations;

pub use identity::{Identity, PoolIdentity};
pub use patch::Patch;
use patch::text;

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
    let cfg = &*cfg.for_pod(pod);
    let identity = identity::resolve(pod, ctx.sa_annotations, ctx.pool, cfg)?;
    let proxy_port = proxy::requested_port(pod)?;
    let skip = skip_list(pod);
    let env = Injected::new(identity.env(cfg), cfg);
    let mut patch = Patch::default();

    for list in ContainerList::ALL {
        for (i, c) in pod.containers(list)?.iter().enumerate() {
            if skip.contains(&container_name(c)) {
                continue;
            }
            let field = list.field();
            let at = Location {
                message: &format!("spec.{field}[{i}]"),
                path: &format!("/spec/{field}/{i}"),
            };
            container_ops(&mut patch, c, at, &env, cfg, pod.display())?;
        }
    }
    volume_op(&mut patch, pod, &identity, cfg)?;
    if let Some(port) = proxy_port {
        proxy_ops(&mut patch, pod, port, &skip, &env, cfg)?;
    }
    Ok(patch)
}

/// Container names from `skip-containers`, `;`-separated and trimmed.
pub(crate) fn skip_list<'a>(pod: &PodView<'a>) -> Vec<&'a str> {
    pod.annotation(keys::SKIP_CONTAINERS)
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// What every container gets, built once per pod: the env entries (empty values are never
/// injected) and the token mount, as values and as JSON text.
struct Injected {
    /// Name and value of each env var, in order.
    vars: Vec<(&'static str, String)>,
    env: Vec<Box<RawValue>>,
    mount: Box<RawValue>,
}

impl Injected {
    fn new(mut vars: Vec<(&'static str, String)>, cfg: &MutationConfig) -> Self {
        vars.retain(|(_, value)| !value.is_empty());
        Injected {
            env: vars
                .iter()
                .map(|(name, value)| text(&EnvVar { name, value }))
                .collect(),
            vars,
            mount: text(&Mount::of(cfg)),
        }
    }
}

/// An injected env var: serialised straight to text for the patch, and to a `Value` for
/// the proxy containers (`complete_injected`), from this one definition.
#[derive(Serialize)]
struct EnvVar<'a> {
    name: &'a str,
    value: &'a str,
}

/// The token mount, as text and as a value.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Mount<'a> {
    name: &'a str,
    mount_path: &'a str,
    read_only: bool,
}

impl<'a> Mount<'a> {
    fn of(cfg: &'a MutationConfig) -> Self {
        Mount {
            name: &cfg.volume_name,
            mount_path: &cfg.mount_path,
            read_only: true,
        }
    }
}

fn mount(cfg: &MutationConfig) -> Value {
    serde_json::to_value(Mount::of(cfg)).expect("a mount serialises")
}

/// Where a container is: `spec.containers[3]` for messages, `/spec/containers/3` in the patch.
#[derive(Clone, Copy)]
struct Location<'a> {
    message: &'a str,
    path: &'a str,
}

/// Appends `items` to the list `field` of the object at `at`, creating it where absent.
fn append(patch: &mut Patch, at: &str, field: &str, exists: bool, items: Vec<Box<RawValue>>) {
    if items.is_empty() {
        return;
    }
    if exists {
        for item in items {
            patch.add(format!("{at}/{field}/-"), item);
        }
    } else {
        patch.add(format!("{at}/{field}"), text(&items));
    }
}

/// The env vars (indices into `Injected`) and token mount one container lacks: env by
/// name, the mount by path.
struct Missing {
    env_exists: bool,
    env: Vec<usize>,
    mounts_exist: bool,
    mount: bool,
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
    let new_env = (0..env.vars.len())
        .filter(|&i| !has_env(env.vars[i].0))
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
        mount: !mounted,
    })
}

fn container_ops(
    patch: &mut Patch,
    c: &Value,
    at: Location<'_>,
    env: &Injected,
    cfg: &MutationConfig,
    display: &str,
) -> Result<(), Denial> {
    let m = missing(c, at.message, env, cfg, display)?;
    let new_env = m.env.iter().map(|&i| env.env[i].clone()).collect();
    append(patch, at.path, "env", m.env_exists, new_env);
    let new_mount = m.mount.then(|| env.mount.clone()).into_iter().collect();
    append(patch, at.path, "volumeMounts", m.mounts_exist, new_mount);
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
        .extend(m.env.iter().map(|&i| {
            let (name, value) = &env.vars[i];
            serde_json::to_value(EnvVar { name, value }).expect("an env var serialises")
        }));
    let mounts = if m.mount { vec![mount(cfg)] } else { vec![] };
    obj.insert("volumeMounts".into(), Value::Array(mounts));
    Ok(c)
}

/// The projected token volume, added even when every container is skipped.
fn volume_op(
    patch: &mut Patch,
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
    // {"name", "projected": {"sources": [{"serviceAccountToken": {"audience",
    // "expirationSeconds", "path"}}]}}, written without a `Value` in between.
    #[derive(Serialize)]
    struct Volume<'a> {
        name: &'a str,
        projected: Projected<'a>,
    }
    #[derive(Serialize)]
    struct Projected<'a> {
        sources: [Source<'a>; 1],
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Source<'a> {
        service_account_token: Token<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Token<'a> {
        audience: &'a str,
        expiration_seconds: i64,
        path: &'a str,
    }
    let volume = Volume {
        name: &cfg.volume_name,
        projected: Projected {
            sources: [Source {
                service_account_token: Token {
                    audience: &cfg.audience,
                    expiration_seconds: identity.token_expiration,
                    path: &cfg.token_path,
                },
            }],
        },
    };
    append(
        patch,
        "/spec",
        "volumes",
        volumes.is_some(),
        vec![text(&volume)],
    );
    Ok(())
}

/// Everything the completed proxy containers depend on.
#[derive(Clone, Copy, PartialEq)]
struct ProxyKey<'a> {
    port: u16,
    cfg: &'a MutationConfig,
    vars: &'a [(&'static str, String)],
    /// Whether `azwi-proxy-init` and `azwi-proxy` are in `skip-containers`.
    skipped: [bool; 2],
}

/// A [`ProxyKey`] kept with what was built for it.
struct Built {
    port: u16,
    cfg: MutationConfig,
    vars: Vec<(&'static str, String)>,
    skipped: [bool; 2],
    containers: [Box<RawValue>; 2],
}

impl Built {
    fn key(&self) -> ProxyKey<'_> {
        ProxyKey {
            port: self.port,
            cfg: &self.cfg,
            vars: &self.vars,
            skipped: self.skipped,
        }
    }
}

/// `azwi-proxy-init` and `azwi-proxy` with the identity env and mount (unless skipped), as
/// JSON text. Built once and copied: building them was the largest part of mutating a pod
/// that asks for the proxy (BENCHMARKS.md). The cache is per thread and keyed on everything
/// they depend on, so it is never stale; consecutive pods of one pool share it.
fn proxy_text(
    key: ProxyKey<'_>,
    env: &Injected,
    display: &str,
) -> Result<[Box<RawValue>; 2], Denial> {
    thread_local! {
        static LAST: RefCell<Option<Built>> = const { RefCell::new(None) };
    }
    if let Some(hit) = LAST.with_borrow(|last| {
        last.as_ref()
            .filter(|b| b.key() == key)
            .map(|b| b.containers.clone())
    }) {
        return Ok(hit);
    }
    let finish = |c: Value, skipped: bool| -> Result<Box<RawValue>, Denial> {
        let c = if skipped {
            c
        } else {
            complete_injected(c, env, key.cfg, display)?
        };
        Ok(text(&c))
    };
    let containers = [
        finish(proxy::init_container(key.port, key.cfg), key.skipped[0])?,
        finish(proxy::sidecar(key.port, key.cfg), key.skipped[1])?,
    ];
    LAST.set(Some(Built {
        port: key.port,
        cfg: key.cfg.clone(),
        vars: key.vars.to_vec(),
        skipped: key.skipped,
        containers: containers.clone(),
    }));
    Ok(containers)
}

/// Inserts `azwi-proxy-init` first among the init containers, and `azwi-proxy` right after it
/// (native sidecar) or first among the containers. Runs after every index-based operation on
/// existing containers, since insertion shifts indices.
fn proxy_ops(
    patch: &mut Patch,
    pod: &PodView<'_>,
    port: u16,
    skip: &[&str],
    env: &Injected,
    cfg: &MutationConfig,
) -> Result<(), Denial> {
    let inits = pod.containers(ContainerList::Init)?;
    let init_field_exists = !matches!(pod.spec().get("initContainers"), None | Some(Value::Null));
    let mut new_inits: Vec<(usize, Box<RawValue>)> = Vec::new();

    // Where the native sidecar goes: right after azwi-proxy-init, wherever that is.
    let mut sidecar_index = inits
        .iter()
        .position(|c| container_name(c) == keys::PROXY_INIT_CONTAINER)
        .map_or(0, |i| i + 1);
    let has_init = pod.has_container(keys::PROXY_INIT_CONTAINER)?;
    let has_sidecar = pod.has_container(keys::PROXY_CONTAINER)?;
    if has_init && has_sidecar {
        return Ok(());
    }
    let key = ProxyKey {
        port,
        cfg,
        vars: &env.vars,
        skipped: [
            skip.contains(&keys::PROXY_INIT_CONTAINER),
            skip.contains(&keys::PROXY_CONTAINER),
        ],
    };
    let [init, sidecar] = proxy_text(key, env, pod.display())?;
    if !has_init {
        new_inits.push((0, init));
        sidecar_index = 1;
    }
    let sidecar = (!has_sidecar).then_some(sidecar);

    let mut new_regular = None;
    match sidecar {
        Some(s) if cfg.native_sidecar => new_inits.push((sidecar_index, s)),
        Some(s) => new_regular = Some(s),
        None => {}
    }

    if !new_inits.is_empty() {
        if init_field_exists {
            for (index, c) in new_inits {
                patch.add(format!("/spec/initContainers/{index}"), c);
            }
        } else {
            let list: Vec<_> = new_inits.into_iter().map(|(_, c)| c).collect();
            patch.add("/spec/initContainers".into(), text(&list));
        }
    }
    if let Some(s) = new_regular {
        let regular_exists = !matches!(pod.spec().get("containers"), None | Some(Value::Null));
        if regular_exists {
            patch.add("/spec/containers/0".into(), s);
        } else {
            patch.add("/spec/containers".into(), text(&[s]));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
