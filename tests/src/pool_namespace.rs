//! A namespace with its own AgentPool for the end-to-end tests, removed when the test ends
//! (a failure included) and handed out only once the webhook enforces the pool there; and
//! clients acting as RBAC-limited users (impersonation).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::DynamicObject;
use serde_json::{Value, json};

use crate::agentpools::{guid, pool_resource, wait_pool_scoped};
use crate::{Cluster, TestNamespace, poll};

/// A namespace of one AgentPool (named like the namespace) whose agents run as
/// ServiceAccount `agent`, which names no identity (the pool's is injected). The pool is
/// deleted on drop, the namespace with it.
pub struct PoolNamespace {
    pub ns: TestNamespace,
    /// The AgentPool's name (the namespace's).
    pub pool: String,
    pub client_id: String,
    api: Api<DynamicObject>,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

/// The ServiceAccount of the pool's agents.
pub const AGENT_SA: &str = "agent";
/// A ServiceAccount of the pool's namespace that is not the pool's.
const PROBE_SA: &str = "not-the-pools";

impl Cluster {
    /// Creates a namespace `<prefix>-…`, its AgentPool with `access` (the `spec.access`
    /// lists) and `enforcement`, and returns once the webhook enforces that pool in that
    /// mode: a pod of the namespace running as a ServiceAccount that is not the pool's,
    /// created by the admin, is refused (Enforce), warned about (Warn), or admitted (Audit).
    pub async fn pool_namespace(
        &self,
        prefix: &str,
        access: Value,
        enforcement: &str,
    ) -> PoolNamespace {
        let ns = self.namespace(prefix).await;
        let sas = Api::<ServiceAccount>::namespaced(self.client.clone(), &ns.name);
        for name in [AGENT_SA, PROBE_SA] {
            let sa = serde_json::from_value(
                json!({"metadata": {"name": name}, "automountServiceAccountToken": false}),
            )
            .expect("static ServiceAccount");
            sas.create(&PostParams::default(), &sa)
                .await
                .unwrap_or_else(|e| panic!("creating ServiceAccount {name}: {e}"));
        }
        let pool = PoolNamespace {
            pool: ns.name.clone(),
            client_id: guid(&ns.name),
            api: Api::all_with(self.client.clone(), &pool_resource()),
            kubectl: self.kubectl_path(),
            kubeconfig: self.kubeconfig.clone(),
            ns,
        };
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "wi-webhook.dev/v1alpha1",
            "kind": "AgentPool",
            "metadata": {"name": pool.pool},
            "spec": {
                "team": prefix,
                "identity": {"clientId": pool.client_id},
                "namespaces": [pool.pool],
                "serviceAccounts": [AGENT_SA],
                "enforcement": "Enforce",
                "access": access,
            },
        }))
        .expect("static AgentPool");
        pool.api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_or_else(|e| panic!("creating AgentPool {}: {e}", pool.pool));
        self.wait_for_mode(&pool, "Enforce").await;
        // The fail-closed webhooks (shell, tokens, updates) select the pool's namespace only
        // once the webhook has scoped them to it.
        wait_pool_scoped(self, &pool.pool)
            .await
            .unwrap_or_else(|e| panic!("scoping pool {}: {e:#}", pool.pool));
        if enforcement != "Enforce" {
            pool.set_enforcement(self, enforcement).await;
        }
        pool
    }

    /// Waits until the webhook decides pool `pool`'s pods in `mode`.
    async fn wait_for_mode(&self, pool: &PoolNamespace, mode: &str) {
        let probe = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe"},
            "spec": {
                "serviceAccountName": PROBE_SA,
                "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "registry.invalid/probe:1"}],
            },
        });
        // JSON is YAML.
        let yaml = probe.to_string();
        let ns = pool.ns.name.clone();
        poll(
            &format!("the webhook enforces pool {ns} in {mode} mode"),
            Duration::from_secs(20),
            || async {
                let out = self
                    .kubectl(&["create", "--dry-run=server", "-n", &ns, "-f", "-"], &yaml)
                    .await?;
                // The admin is no pod creator of the pool either, and either refusal may be
                // the one reported: both come from the same pool index.
                let named = out.stderr.contains("[pool-service-account]");
                let done = match mode {
                    "Enforce" => {
                        !out.success && (named || out.stderr.contains("[pool-pod-origin]"))
                    }
                    "Warn" => out.success && named && out.stderr.contains("Warning:"),
                    _ => out.success && !named,
                };
                Ok(done.then_some(()))
            },
        )
        .await
        .unwrap();
    }
}

impl PoolNamespace {
    pub fn name(&self) -> &str {
        &self.ns.name
    }

    /// Changes the pool's enforcement and waits until the webhook applies it.
    pub async fn set_enforcement(&self, cluster: &Cluster, mode: &str) {
        self.api
            .patch(
                &self.pool,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"enforcement": mode}})),
            )
            .await
            .unwrap_or_else(|e| panic!("setting pool {} to {mode}: {e}", self.pool));
        cluster.wait_for_mode(self, mode).await;
    }

    /// Creates a Deployment of `replicas` agents (labelled for injection, ServiceAccount
    /// `agent`, `template_spec` merged into the pod spec) and returns its pods once the
    /// ReplicaSet controller has created them all.
    pub async fn agents(
        &self,
        cluster: &Cluster,
        name: &str,
        replicas: usize,
        template_spec: Value,
    ) -> anyhow::Result<Vec<Pod>> {
        let mut spec = json!({
            "serviceAccountName": AGENT_SA,
            "automountServiceAccountToken": false,
            "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}],
        });
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), template_spec) {
            spec.extend(extra);
        }
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name, "azure.workload.identity/use": "true"}},
                    "spec": spec,
                },
            },
        });
        cluster
            .apply_yaml(self.name(), &deployment.to_string())
            .await?;
        let pods = Api::<Pod>::namespaced(cluster.client.clone(), self.name());
        let selector = format!("app={name}");
        poll(
            &format!("{replicas} pods of Deployment {name}"),
            Duration::from_secs(60),
            || async {
                let list = pods
                    .list(&kube::api::ListParams::default().labels(&selector))
                    .await?;
                Ok((list.items.len() >= replicas).then_some(list.items))
            },
        )
        .await
    }
}

impl Drop for PoolNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "agentpool", &self.pool, "--ignore-not-found"])
            .args(["--wait=false", "--request-timeout=10s"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Cluster {
    /// A client of the admin kubeconfig acting as `user` in `groups` (impersonation: the
    /// API server authorizes and admits the request as that user, `system:authenticated`
    /// added).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
        let raw = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default()).await?;
        config.auth_info.impersonate = Some(user.into());
        config.auth_info.impersonate_groups =
            Some(groups.iter().map(|g| (*g).to_string()).collect());
        Ok(kube::Client::try_from(config)?)
    }

    /// kubectl acting as `user` in `groups`.
    pub async fn kubectl_as(
        &self,
        user: &str,
        groups: &[&str],
        args: &[&str],
        stdin: &str,
    ) -> anyhow::Result<crate::KubectlOutput> {
        let mut all = vec!["--as", user];
        for g in groups {
            all.extend(["--as-group", g]);
        }
        all.extend(args);
        self.kubectl(&all, stdin).await
    }

    /// A Role in `ns` with `rules`, bound to `subjects` (RBAC subjects as JSON).
    pub async fn grant(
        &self,
        ns: &str,
        name: &str,
        rules: Value,
        subjects: Value,
    ) -> anyhow::Result<()> {
        // JSON documents are YAML documents.
        let yaml = serde_json::to_string(&json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": name}, "rules": rules,
        }))? + "---\n"
            + &serde_json::to_string(&json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": subjects,
            }))?;
        self.apply_yaml(ns, &yaml).await.map(|_| ())
    }
}
