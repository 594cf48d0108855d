//! `wi-webhook audit`: every pool violation in manifests or in a live cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::core::PartialObjectMeta;

use crate::audit::{self, Auditor, Finding};
use crate::config::MutationConfig;
use crate::inputs;
use crate::offline::ClusterState;
use crate::policy::crd::AgentPool;
use crate::policy::reserved::Reserved;
use crate::policy::{Policy, Pool};
use crate::workloads::ObjectId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A readable table: object, namespace, pool, team, rule, message.
    Table,
    /// A JSON list of findings.
    Json,
    /// wgpolicyk8s.io/v1alpha2 PolicyReports (one per namespace), as YAML.
    Policyreport,
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// File or directory of manifests (repeatable; `-` reads stdin, e.g. `kustomize build`
    /// output). AgentPools and ServiceAccounts among them are the cluster state.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE_OR_DIR",
        required_unless_present = "cluster"
    )]
    pub files: Vec<PathBuf>,

    /// Audit the live cluster instead (kubeconfig or in-cluster configuration).
    #[arg(long, conflicts_with = "files")]
    pub cluster: bool,

    /// With --cluster: only this namespace. With files: the namespace of objects naming none.
    #[arg(short, long)]
    pub namespace: Option<String>,

    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,

    /// The webhook's tenant (the one `serve` runs with), for checking AZURE_TENANT_ID in
    /// pools without one: injected pods carry it. Required.
    #[arg(long, env = "AZURE_TENANT_ID", value_name = "ID")]
    pub tenant_id: Option<String>,

    /// The webhook's token mount path, for checking AZURE_FEDERATED_TOKEN_FILE overrides.
    #[arg(long, env = "WI_TOKEN_MOUNT_PATH", default_value = crate::config::DEFAULT_MOUNT_PATH)]
    pub token_mount_path: String,

    /// Objects per list request with --cluster (the list API is paged, never loaded whole).
    #[arg(long, default_value_t = 500)]
    pub page_size: u32,

    /// Federated identity credentials to check against the AgentPools, the issuer and the
    /// audience (repeatable): files or directories of `az identity federated-credential list
    /// -o json` and `az identity show -o json` output, or `terraform show -json` of a plan or
    /// a state; `-` reads stdin.
    #[arg(long = "credentials", value_name = "FILE_OR_DIR")]
    pub credentials: Vec<PathBuf>,

    /// The cluster's service-account issuer, exactly as its tokens carry it (trailing slash
    /// included). Required with --credentials on files; with --cluster it defaults to the
    /// API server's discovery document.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// The audience the webhook projects tokens for (what credentials must accept).
    #[arg(long, env = "WI_AUDIENCE", default_value = crate::config::DEFAULT_AUDIENCE)]
    pub audience: String,

    /// kubeconfig for --cluster; default: in-cluster config, then ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

/// What an audit prints and how it exits: 0 clean, 1 violations, 2 unreadable input.
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

pub async fn run(args: AuditArgs) -> ExitCode {
    let result = if args.cluster {
        audit_cluster(&args).await
    } else {
        audit_files(&args)
    };
    eprint!("{}", result.stderr);
    print!("{}", result.stdout);
    ExitCode::from(result.code)
}

/// The webhook's tenant: without it every injected pod of a pool without a tenantId would be
/// reported for its AZURE_TENANT_ID, so the audit refuses to guess.
fn tenant(args: &AuditArgs) -> Result<&str, &'static str> {
    match args.tenant_id.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(
            "the webhook's tenant is required: pass --tenant-id or set AZURE_TENANT_ID to the \
             value `wi-webhook serve` runs with (injected pods carry it as AZURE_TENANT_ID)",
        ),
    }
}

fn config(args: &AuditArgs) -> MutationConfig {
    let mut config = MutationConfig::new(tenant(args).unwrap_or_default());
    config.mount_path = args.token_mount_path.clone();
    config
}

/// The audit of manifests, without touching stdout: the golden tests call this.
pub fn audit_files(args: &AuditArgs) -> Run {
    let fail = |e: &dyn std::fmt::Display| Run {
        stdout: String::new(),
        stderr: format!("error: {e}\n"),
        code: 2,
    };
    let docs = match inputs::read_all(&args.files) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let default_namespace = args.namespace.as_deref().unwrap_or("default");
    let state = match ClusterState::from_documents(&docs, default_namespace) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // Only pods and workloads are decided with the tenant: AgentPools and credentials alone
    // need none. A tenant given empty is refused as `serve` refuses it.
    let decides = docs
        .iter()
        .any(|d| ObjectId::of_document(&d.value, default_namespace).is_some());
    if (decides || args.tenant_id.is_some())
        && let Err(e) = tenant(args)
    {
        return fail(&e);
    }
    let auditor = Auditor::new(state, config(args));
    let mut findings: Vec<Finding> = docs
        .iter()
        .flat_map(|d| auditor.audit(&d.value, &d.source, default_namespace))
        .collect();
    // AgentPools naming a namespace the webhook does not guard (by name: files hold no
    // namespace labels).
    for d in &docs {
        let pool = serde_json::from_value::<AgentPool>(d.value.clone())
            .ok()
            .filter(|_| crate::inputs::kind(&d.value) == "AgentPool")
            .and_then(|p| Pool::from_resource(&p));
        if let Some(pool) = pool {
            let reserved = Reserved::default();
            let reasons: Vec<String> = pool
                .namespaces
                .iter()
                .filter_map(|n| reserved.fixed(n))
                .collect();
            findings.extend(audit::pool_findings(&pool, &d.source, &reasons));
        }
    }
    let mut stderr = String::new();
    if !args.credentials.is_empty() {
        let Some(issuer) = &args.issuer else {
            return fail(
                &"--credentials needs --issuer, the cluster's service-account issuer \
                (for AKS: az aks show -n CLUSTER -g GROUP --query oidcIssuerProfile.issuerUrl -o tsv)",
            );
        };
        let pools = auditor.pools();
        match audit_credentials(args, &pools, issuer) {
            Ok((found, notes)) => {
                findings.extend(found);
                stderr = notes;
            }
            Err(e) => return fail(&e),
        }
    }
    finish(args.output, findings, stderr, 0)
}

/// The federated-credential findings, and notes on what was not checked.
fn audit_credentials(
    args: &AuditArgs,
    pools: &[Pool],
    issuer: &str,
) -> anyhow::Result<(Vec<Finding>, String)> {
    let stdin = |p: &PathBuf| p.as_os_str() == "-";
    if args.files.iter().any(stdin) && args.credentials.iter().any(stdin) {
        anyhow::bail!("-f - and --credentials - cannot both read stdin");
    }
    let credentials = crate::federation::read::read_paths(&args.credentials)?;
    let report = crate::federation::rules::audit(
        &credentials,
        &crate::federation::rules::Context {
            pools,
            issuer,
            audience: &args.audience,
        },
    );
    let notes = report
        .notes
        .iter()
        .map(|n| format!("note: {n}\n"))
        .collect();
    Ok((report.findings, notes))
}

fn finish(output: Output, findings: Vec<Finding>, stderr: String, timestamp: i64) -> Run {
    let stdout = match output {
        Output::Table if findings.is_empty() => String::new(),
        Output::Table => audit::table(&findings),
        Output::Json => serde_json::to_string_pretty(&findings).expect("findings serialise") + "\n",
        Output::Policyreport => audit::policy_reports(&findings, timestamp)
            .iter()
            .map(crate::yaml::to_string)
            .collect::<Vec<_>>()
            .join("---\n"),
    };
    let mut stderr = stderr;
    if findings.is_empty() {
        stderr += "no pool violations\n";
    } else {
        stderr += &format!("{} pool violation(s)\n", findings.len());
    }
    Run {
        stdout,
        stderr,
        code: if findings.is_empty() { 0 } else { 1 },
    }
}

/// What an audit lists: Pods, then every workload kind.
fn kinds() -> impl Iterator<Item = (&'static str, &'static str, &'static str, &'static str)> {
    std::iter::once(("", "v1", "Pod", "pods")).chain(
        crate::workloads::WORKLOADS
            .iter()
            .map(|w| (w.group, w.version, w.kind, w.plural)),
    )
}

async fn audit_cluster(args: &AuditArgs) -> Run {
    match audit_cluster_inner(args).await {
        Ok(run) => run,
        Err(e) => Run {
            stdout: String::new(),
            stderr: format!("error: {e:#}\n"),
            code: 2,
        },
    }
}

async fn audit_cluster_inner(args: &AuditArgs) -> anyhow::Result<Run> {
    tenant(args).map_err(anyhow::Error::msg)?;
    let client = super::serve::client(args.kubeconfig.as_deref()).await?;
    let ns = args.namespace.as_deref();
    let params = ListParams::default().limit(args.page_size);

    // The cluster state: AgentPools and ServiceAccount metadata (small objects, kept whole).
    let pools: Vec<Pool> = list_all(Api::<AgentPool>::all(client.clone()), &params, "AgentPools")
        .await?
        .iter()
        .filter_map(Pool::from_resource)
        .collect();
    // AgentPools naming a namespace the webhook does not guard (kube-system, or labelled
    // ignored).
    let reserved = Reserved {
        own_namespace: None,
        namespaces: Some(Api::all(client.clone())),
    };
    let mut pool_findings = Vec::new();
    for pool in &pools {
        let mut reasons = Vec::new();
        for ns in &pool.namespaces {
            reasons.extend(reserved.why(ns).await);
        }
        pool_findings.extend(audit::pool_findings(pool, "cluster", &reasons));
    }
    let sa_api: Api<PartialObjectMeta<ServiceAccount>> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let accounts = list_all(sa_api, &params, "ServiceAccounts").await?;
    let state = ClusterState {
        policy: Policy::of(&pools),
        accounts: crate::serviceaccounts::store_of_meta(accounts),
    };
    let (credential_findings, notes) = if args.credentials.is_empty() {
        (Vec::new(), String::new())
    } else {
        let issuer = match &args.issuer {
            Some(issuer) => issuer.clone(),
            None => super::doctor::cluster_issuer(&client)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the cluster's issuer from /.well-known/openid-configuration ({e:#}); pass --issuer"))?,
        };
        audit_credentials(args, &pools, &issuer)?
    };
    let auditor = Auditor::new(state, config(args));

    // Pods and workloads, page by page: only findings are kept. A terminal sees the count
    // move on one line; a log (CI) gets one line per kind and never a carriage return.
    let live = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut findings = pool_findings;
    for (group, version, kind, plural) in kinds() {
        let resource = ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let mut params = params.clone();
        let mut seen = 0usize;
        loop {
            let page = api.list(&params).await?;
            for object in &page.items {
                let mut value = serde_json::to_value(object)?;
                value["apiVersion"] = resource.api_version.clone().into();
                value["kind"] = kind.into();
                let target = ObjectId::of(group, kind, &value, "", "default")
                    .expect("every listed kind is a target");
                findings.extend(auditor.audit_target(&target, &value, "cluster"));
            }
            seen += page.items.len();
            if live {
                eprint!(
                    "\raudit: {kind}: {seen} listed, {} finding(s) so far   ",
                    findings.len()
                );
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params.continue_token = Some(token),
                None => break,
            }
        }
        if live {
            eprintln!();
        } else {
            eprintln!(
                "audit: {kind}: {seen} listed, {} finding(s)",
                findings.len()
            );
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    findings.extend(credential_findings);
    Ok(finish(args.output, findings, notes, now))
}

/// Every object of a (small) kind, through the paged list API.
async fn list_all<K>(api: Api<K>, params: &ListParams, what: &str) -> anyhow::Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = params.clone();
    let mut all = Vec::new();
    loop {
        let page = api
            .list(&params)
            .await
            .map_err(|e| anyhow::anyhow!("cannot list {what}: {e}"))?;
        all.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => return Ok(all),
        }
    }
}
