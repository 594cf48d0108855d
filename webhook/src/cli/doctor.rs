//! `wi-webhook doctor`: reads one agent's chain from the live cluster (its pod, ServiceAccount,
//! the AgentPools, the issuer's discovery document, a token minted through TokenRequest) and
//! prints the walk of `crate::doctor`. Exit 0: every step passes; 1: a step fails; 2: unusable
//! input (no such pod or pool, unreadable credentials, no cluster).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::Value;

use crate::doctor::{self, Inputs, Token};
use crate::federation::{self, token};
use crate::policy::Pool;
use crate::policy::crd::AgentPool;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// The agent's pod. Or --pool, for one of the pool's pods.
    #[arg(required_unless_present = "pool", conflicts_with = "pool")]
    pub pod: Option<String>,

    /// Namespace of the pod (default: the kubeconfig's).
    #[arg(short, long)]
    pub namespace: Option<String>,

    /// An AgentPool: check one of its pods (running as one of its ServiceAccounts).
    #[arg(long)]
    pub pool: Option<String>,

    /// Federated credentials to match the token against: files or directories of
    /// `az identity federated-credential list -o json` (with `az identity show -o json`) or
    /// `terraform show -json` output; `-` reads stdin. Repeatable.
    #[arg(long = "credentials", value_name = "FILE_OR_DIR")]
    pub credentials: Vec<PathBuf>,

    /// The audience the webhook projects tokens for.
    #[arg(long, env = "WI_AUDIENCE", default_value = crate::config::DEFAULT_AUDIENCE)]
    pub audience: String,

    /// The webhook's token volume name.
    #[arg(long, env = "WI_TOKEN_VOLUME_NAME", default_value = crate::config::DEFAULT_VOLUME_NAME)]
    pub token_volume_name: String,

    /// The webhook's tenant, for the pool verdict's AZURE_TENANT_ID checks.
    #[arg(long, env = "AZURE_TENANT_ID", default_value = "")]
    pub tenant_id: String,

    /// The cluster's service-account issuer, when the discovery document is not readable.
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,

    /// Act as this user (impersonation), e.g. to see what a team member may check.
    #[arg(long = "as", value_name = "USER")]
    pub as_user: Option<String>,

    /// Groups to act as, with --as (repeatable).
    #[arg(long = "as-group", value_name = "GROUP", requires = "as_user")]
    pub as_groups: Vec<String>,

    /// kubeconfig; default: in-cluster config, then ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

pub async fn run(args: DoctorArgs) -> ExitCode {
    match doctor(&args).await {
        Ok((steps, header)) => {
            eprintln!("{header}");
            print!("{}", doctor::render(&steps));
            ExitCode::from(doctor::exit_code(&steps))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The cluster's service-account issuer, from the API server's OIDC discovery document.
pub async fn cluster_issuer(client: &kube::Client) -> anyhow::Result<String> {
    let request = http::Request::get("/.well-known/openid-configuration").body(Vec::new())?;
    let document: Value = client.request(request).await?;
    document["issuer"]
        .as_str()
        .map(str::to_string)
        .context("the discovery document has no issuer")
}

async fn doctor(args: &DoctorArgs) -> anyhow::Result<(Vec<doctor::Step>, String)> {
    let credentials = if args.credentials.is_empty() {
        None
    } else {
        Some(federation::read::read_paths(&args.credentials)?)
    };
    let mut config = super::serve::kube_config(args.kubeconfig.as_deref()).await?;
    if let Some(user) = &args.as_user {
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups =
            (!args.as_groups.is_empty()).then(|| args.as_groups.clone());
    }
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config)?;

    let (pools, pools_error): (Vec<Pool>, _) = match Api::<AgentPool>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => (
            list.items.iter().filter_map(Pool::from_resource).collect(),
            None,
        ),
        Err(e) => (Vec::new(), Some(message(&e))),
    };
    let pod = find_pod(&client, args, &namespace, &pools).await?;
    let namespace = pod.metadata.namespace.clone().unwrap_or(namespace);
    let pod_json = serde_json::to_value(&pod)?;
    let sa_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let sa = accounts
        .get_opt(&sa_name)
        .await
        .with_context(|| format!("cannot read ServiceAccount {namespace}/{sa_name}"))?;
    let annotations = sa.map(|sa| sa.metadata.annotations.unwrap_or_default());

    let discovered = match &args.issuer {
        Some(issuer) => Ok(issuer.clone()),
        None => cluster_issuer(&client).await.map_err(|e| format!("{e:#}")),
    };
    let audience = doctor::token_audience(&pod_json, &args.token_volume_name, &args.audience);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = match accounts
        .create_token_request(&sa_name, &PostParams::default(), &request)
        .await
    {
        Ok(answer) => match answer.status.map(|s| token::decode(&s.token)) {
            Some(Ok(claims)) => Token::Minted(claims),
            Some(Err(e)) => Token::Failed(format!("the minted token cannot be read: {e}")),
            None => Token::Failed("the answer carries no token".into()),
        },
        Err(kube::Error::Api(status)) if status.code == 403 => Token::Refused(status.message),
        Err(e) => Token::Failed(message(&e)),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let steps = doctor::walk(&Inputs {
        pod: &pod_json,
        namespace: &namespace,
        service_account: annotations.as_ref(),
        pools: &pools,
        pools_error: pools_error.as_deref(),
        audience: &args.audience,
        volume_name: &args.token_volume_name,
        tenant_id: &args.tenant_id,
        issuer: discovered.as_deref().map_err(String::as_str),
        token: &token,
        credentials: credentials.as_ref(),
        now,
    });
    let header = format!(
        "doctor: pod {namespace}/{}",
        pod.metadata.name.unwrap_or_default()
    );
    Ok((steps, header))
}

/// The API server's message of an error, without the client's wrapping.
fn message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// The pod named, or with --pool the first (by name) of the pool's pods that runs as one of
/// its ServiceAccounts.
async fn find_pod(
    client: &kube::Client,
    args: &DoctorArgs,
    namespace: &str,
    pools: &[Pool],
) -> anyhow::Result<Pod> {
    if let Some(name) = &args.pod {
        return Api::<Pod>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
            .with_context(|| format!("cannot read pod {namespace}/{name}"))?
            .with_context(|| format!("pod {namespace}/{name} not found"));
    }
    let name = args.pool.as_deref().unwrap_or_default();
    let Some(pool) = pools.iter().find(|p| p.name == name) else {
        bail!("AgentPool {name} not found (or not readable)");
    };
    let mut candidates = Vec::new();
    for ns in &pool.namespaces {
        let list = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("cannot list pods in {ns}"))?;
        candidates.extend(list.items.into_iter().filter(|p| {
            let sa = p
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.as_deref());
            pool.service_accounts
                .iter()
                .any(|s| Some(s.as_str()) == sa.filter(|s| !s.is_empty()).or(Some("default")))
        }));
    }
    candidates.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    candidates
        .into_iter()
        .next()
        .with_context(|| format!("pool {name} has no pod running as one of its ServiceAccounts"))
}
