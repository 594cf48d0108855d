//! The commands of the `wi-webhook` binary.

pub mod audit;
pub mod certs;
pub mod doctor;
pub mod mutate;
pub mod serve;
pub mod upstream;

use clap::{Args, ValueEnum};

use crate::config::{self, MutationConfig};
use crate::layout::TokenLayout;

/// Exit status: a finding (audit violations, a denied object in `mutate`).
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: input the command cannot use (unreadable file, bad YAML, a configuration
/// refused at start-up, an unreachable cluster).
pub const EXIT_INPUT: u8 = 2;
/// Exit status: a command-line usage error (EX_USAGE of sysexits.h).
pub const EXIT_USAGE: u8 = 64;

/// The exit codes, as `--help` prints them (docs/operations.md has the same table).
pub const EXIT_CODES: &str = "\
Exit codes:
  0   success; for audit and mutate: no violation, nothing denied
  1   audit found violations, or mutate denied an object
  2   unusable input: unreadable file, bad YAML, configuration refused, cluster unreachable
  64  usage error: unknown flag or subcommand, bad flag value";

/// How the proxy sidecar is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NativeSidecar {
    /// Ask the API server once at start-up: native on 1.32 or newer.
    Auto,
    /// An init container with restartPolicy Always, right after azwi-proxy-init.
    Always,
    /// A regular container, first in spec.containers.
    Never,
}

/// Flags that shape the mutation, shared by `serve` and `mutate`.
#[derive(Args, Clone, Debug)]
pub struct MutationArgs {
    /// Tenant injected when neither the ServiceAccount nor an AgentPool names one. Required.
    #[arg(long, env = "AZURE_TENANT_ID", value_name = "ID")]
    pub tenant_id: Option<String>,

    /// Azure cloud, case-insensitive: AzurePublicCloud (default), AzureUSGovernmentCloud,
    /// AzureChinaCloud or AzureGermanCloud. Sets AZURE_AUTHORITY_HOST.
    #[arg(
        long,
        env = "AZURE_ENVIRONMENT",
        default_value = "AzurePublicCloud",
        value_name = "NAME"
    )]
    pub azure_environment: String,

    /// AZURE_AUTHORITY_HOST for other clouds (Azure Stack); overrides --azure-environment.
    #[arg(long, env = "WI_AUTHORITY_HOST", value_name = "URL")]
    pub authority_host: Option<String>,

    /// Audience of the projected service-account token.
    #[arg(long, env = "WI_AUDIENCE", default_value = config::DEFAULT_AUDIENCE)]
    pub audience: String,

    /// Name of the injected projected token volume.
    #[arg(long, env = "WI_TOKEN_VOLUME_NAME", default_value = config::DEFAULT_VOLUME_NAME)]
    pub token_volume_name: String,

    /// Where the token volume is mounted (read-only) in each container.
    #[arg(long, env = "WI_TOKEN_MOUNT_PATH", default_value = config::DEFAULT_MOUNT_PATH)]
    pub token_mount_path: String,

    /// Token volume layout: `default` (the two flags above), or `upstream`, exactly as the
    /// upstream webhook v1.6.0 (volume azure-workload-identity-reserved-<hash of the pod
    /// name> at /var/run/secrets/azure/wi, AZURE_FEDERATED_TOKEN_FILE
    /// /var/run/secrets/azure/wi/token/azure-identity-token).
    #[arg(long, env = "WI_TOKEN_LAYOUT", value_enum, default_value = "default")]
    pub token_layout: TokenLayout,

    /// Image of the azwi-proxy-init init container [env: WI_PROXY_INIT_IMAGE, then
    /// upstream's PROXY_INIT_IMAGE] [default: the upstream v1.6.0 image].
    #[arg(long, env = "WI_PROXY_INIT_IMAGE", value_name = "IMAGE")]
    pub proxy_init_image: Option<String>,

    /// Image of the azwi-proxy sidecar [env: WI_PROXY_IMAGE, then upstream's PROXY_IMAGE]
    /// [default: the upstream v1.6.0 image].
    #[arg(long, env = "WI_PROXY_IMAGE", value_name = "IMAGE")]
    pub proxy_image: Option<String>,

    /// --log-level passed to the azwi-proxy sidecar.
    #[arg(long, env = "WI_PROXY_LOG_LEVEL", default_value = "info")]
    pub proxy_log_level: String,

    /// Place the proxy as a native sidecar. `serve` resolves `auto` by asking the API server;
    /// `mutate` has no server and treats `auto` as `always` (every supported Kubernetes,
    /// 1.32 and newer, has native sidecars).
    #[arg(long, env = "WI_NATIVE_SIDECAR", value_enum, default_value = "auto")]
    pub native_sidecar: NativeSidecar,
}

impl MutationArgs {
    /// The validated configuration; `native` is the resolved sidecar placement.
    pub fn config(&self, native: bool) -> anyhow::Result<MutationConfig> {
        let authority_host = match &self.authority_host {
            Some(url) if !url.trim().is_empty() => url.trim().to_string(),
            _ => config::authority_host_for(&self.azure_environment)?,
        };
        if self.token_layout == TokenLayout::Upstream
            && (self.token_volume_name != config::DEFAULT_VOLUME_NAME
                || self.token_mount_path != config::DEFAULT_MOUNT_PATH)
        {
            anyhow::bail!(
                "--token-layout upstream sets the volume name and mount path itself: leave out \
                 --token-volume-name and --token-mount-path"
            );
        }
        let config = MutationConfig {
            tenant_id: self.tenant_id.clone().unwrap_or_default(),
            authority_host,
            // Empty means the default, as upstream reads its --audience.
            audience: match self.audience.trim() {
                "" => config::DEFAULT_AUDIENCE.into(),
                a => a.into(),
            },
            volume_name: self.token_volume_name.clone(),
            mount_path: self.token_mount_path.clone(),
            token_path: crate::keys::TOKEN_PATH.into(),
            layout: self.token_layout,
            proxy_init_image: upstream::image(
                &self.proxy_init_image,
                upstream::PROXY_INIT_IMAGE_ENV,
                config::DEFAULT_PROXY_INIT_IMAGE,
            ),
            proxy_image: upstream::image(
                &self.proxy_image,
                upstream::PROXY_IMAGE_ENV,
                config::DEFAULT_PROXY_IMAGE,
            ),
            proxy_log_level: self.proxy_log_level.clone(),
            native_sidecar: native,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Where the API server reaches the webhook, for `wi-webhook webhook-config`.
#[derive(Args, Debug)]
pub struct WebhookConfigArgs {
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "wi-webhook-system")]
    pub namespace: String,
    /// Name of the webhook's Service.
    #[arg(long, default_value = "wi-webhook")]
    pub service: String,
    /// Port of the webhook's Service.
    #[arg(long, default_value_t = 443)]
    pub port: i32,
    /// Reach the webhook at this URL base instead of a Service (e.g. https://127.0.0.1:9443).
    #[arg(long, conflicts_with_all = ["service"])]
    pub url: Option<String>,
    /// base64 CA bundle; leave it out for cert-manager's CA injector or self-managed mode.
    #[arg(long)]
    pub ca_bundle: Option<String>,
    /// Seconds the API server waits for an answer (measured p99 is far below a millisecond).
    #[arg(long, default_value_t = 10)]
    pub timeout_seconds: i32,
}

impl WebhookConfigArgs {
    pub fn options(&self) -> anyhow::Result<crate::webhookconfig::Options> {
        use base64::Engine;
        let ca_bundle = match &self.ca_bundle {
            Some(b) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| anyhow::anyhow!("--ca-bundle is not base64: {e}"))?,
            ),
            None => None,
        };
        Ok(crate::webhookconfig::Options {
            target: match &self.url {
                Some(url) => crate::webhookconfig::Target::Url(url.clone()),
                None => crate::webhookconfig::Target::Service {
                    namespace: self.namespace.clone(),
                    name: self.service.clone(),
                    port: self.port,
                },
            },
            ca_bundle,
            timeout_seconds: self.timeout_seconds,
        })
    }
}
