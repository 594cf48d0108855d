//! The certificate flags of `serve` and the two ways of getting a serving certificate
//!: files written by cert-manager, reloaded when they change, or
//! self-managed (a CA and certificate the webhook keeps in a Secret, rotated before expiry).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kube::Client;
use wi_certs::LoadedPair;
use wi_certs::expiry::{format_duration, parse_duration};
use wi_certs::files::{OnLoad, Reloader};
use wi_certs::selfmanaged::{Manager, Settings};

use crate::api::{AppState, tls::CertSlot};

/// Where the in-cluster namespace of the pod is found when POD_NAMESPACE is not set.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Args, Debug)]
#[command(next_help_heading = "Certificates")]
pub struct CertArgs {
    /// File mode: serving certificate (PEM, chain allowed), for example from a cert-manager
    /// Secret volume. Reloaded when it changes (the Secret volume's `..data` symlink swap
    /// included); the previous pair keeps serving until the new one is complete and valid.
    #[arg(
        long,
        env = "WI_TLS_CERT_FILE",
        default_value = "/etc/wi-webhook/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,

    /// File mode: private key of the serving certificate (PEM).
    #[arg(
        long,
        env = "WI_TLS_KEY_FILE",
        default_value = "/etc/wi-webhook/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,

    /// File mode, as upstream's --webhook-cert-dir: the directory holding tls.crt and
    /// tls.key (a Secret volume), instead of --tls-cert-file and --tls-key-file.
    #[arg(long, env = "WI_WEBHOOK_CERT_DIR", value_name = "DIR", conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    pub webhook_cert_dir: Option<PathBuf>,

    /// File mode, as upstream's --disable-cert-rotation (certificates provided from
    /// outside). File mode is the default already; this only refuses --self-managed-certs.
    #[arg(
        long,
        env = "WI_DISABLE_CERT_ROTATION",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        conflicts_with = "self_managed_certs",
        value_name = "BOOL"
    )]
    pub disable_cert_rotation: bool,

    /// How often the certificate files (file mode), or the Secret and the webhook
    /// configurations (self-managed mode), are checked for changes. A duration: 10s, 1m.
    #[arg(long, env = "WI_CERT_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub cert_reload_interval: Duration,

    /// Self-managed mode: create a CA and serving certificate in the Secret
    /// --cert-secret-name (shared by all replicas), write the CA into the caBundle of the
    /// webhook configurations --webhook-config-name, and rotate before expiry. Ignores
    /// --tls-cert-file and --tls-key-file. Needs RBAC: get, create and update on that Secret;
    /// get and update on those webhook configurations.
    #[arg(long, env = "WI_SELF_MANAGED_CERTS")]
    pub self_managed_certs: bool,

    /// Self-managed mode: name of the Secret holding the CA and serving certificate
    /// (keys ca.crt, ca.key, tls.crt, tls.key).
    #[arg(long, env = "WI_CERT_SECRET_NAME", default_value = "wi-webhook-tls")]
    pub cert_secret_name: String,

    /// Self-managed mode: namespace of that Secret, the webhook's own (downward API:
    /// POD_NAMESPACE). Default: the namespace of the pod's ServiceAccount token.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub cert_namespace: Option<String>,

    /// Self-managed mode: the webhook's Service. The serving certificate is for <svc>,
    /// <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local.
    #[arg(long, env = "WI_SERVICE_NAME", default_value = "wi-webhook")]
    pub service_name: String,

    /// Self-managed mode: another DNS name for the serving certificate (repeatable, or
    /// comma-separated in the variable), e.g. for a cluster domain other than cluster.local.
    #[arg(
        long,
        env = "WI_CERT_EXTRA_DNS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub cert_extra_dns: Vec<String>,

    /// Self-managed mode: an IP address for the serving certificate (repeatable, or
    /// comma-separated in the variable), e.g. 127.0.0.1 for an API server calling a URL.
    #[arg(
        long,
        env = "WI_CERT_EXTRA_IP",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub cert_extra_ip: Vec<IpAddr>,

    /// Name of the MutatingWebhookConfiguration and of the ValidatingWebhookConfiguration
    /// whose `*.pool-namespaces.*` / `*.other-namespaces.*` webhooks the webhook keeps scoped
    /// to the AgentPools' namespaces. Self-managed mode: also those whose webhooks' caBundle
    /// the webhook writes; readiness waits until the caBundle holds the CA.
    #[arg(long, env = "WI_WEBHOOK_CONFIG_NAME", default_value = "wi-webhook")]
    pub webhook_config_name: String,

    /// Self-managed mode: lifetime of the serving certificate, renewed when a third of it is
    /// left (default: 90 days, renewed after 60). A duration: 90d, 12h, 30m.
    #[arg(long, env = "WI_CERT_LIFETIME", default_value = "90d", value_parser = parse_duration, value_name = "DURATION")]
    pub cert_lifetime: Duration,

    /// Self-managed mode: lifetime of the CA, renewed when a third of it is left (default
    /// 10 years: after 6.7). The new CA is trusted next to the old one for a twelfth of this
    /// (at most 7 days) before serving certificates move to it, and the old one is dropped
    /// as long again after that.
    #[arg(long, env = "WI_CA_LIFETIME", default_value = "3650d", value_parser = parse_duration, value_name = "DURATION")]
    pub ca_lifetime: Duration,
}

/// A certificate source, checked before the webhook touches the network.
pub enum Prepared {
    Files {
        reloader: Reloader,
        pair: LoadedPair,
        interval: Duration,
    },
    SelfManaged(Settings),
}

impl CertArgs {
    /// File mode: loads and checks the pair (unreadable, mismatched, expired: refused).
    /// Self-managed mode: checks the lifetimes and finds the namespace.
    pub fn prepare(&self) -> anyhow::Result<Prepared> {
        if !self.self_managed_certs {
            let (cert, key) = match &self.webhook_cert_dir {
                Some(dir) => (
                    dir.join(wi_certs::TLS_CERT_FILE),
                    dir.join(wi_certs::TLS_KEY_FILE),
                ),
                None => (self.tls_cert_file.clone(), self.tls_key_file.clone()),
            };
            let (reloader, pair) =
                Reloader::open(&cert, &key).context("cannot serve with this certificate")?;
            return Ok(Prepared::Files {
                reloader,
                pair,
                interval: self.cert_reload_interval,
            });
        }
        let namespace = match &self.cert_namespace {
            Some(ns) if !ns.trim().is_empty() => ns.trim().to_owned(),
            _ => std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .map(|ns| ns.trim().to_owned())
                .ok()
                .filter(|ns| !ns.is_empty())
                .context(
                    "--self-managed-certs needs the webhook's namespace: set --cert-namespace or \
                     POD_NAMESPACE (downward API: fieldRef metadata.namespace)",
                )?,
        };
        let settings = Settings {
            dns_names: Settings::service_dns_names(
                &self.service_name,
                &namespace,
                &self.cert_extra_dns,
            ),
            namespace,
            secret_name: self.cert_secret_name.clone(),
            webhook_config_name: self.webhook_config_name.clone(),
            ip_addresses: self.cert_extra_ip.clone(),
            cert_lifetime: self.cert_lifetime,
            ca_lifetime: self.ca_lifetime,
            interval: self.cert_reload_interval,
        };
        settings.validate().map_err(anyhow::Error::msg)?;
        Ok(Prepared::SelfManaged(settings))
    }
}

impl Prepared {
    /// Installs the first certificate and starts keeping it current: the slot the TLS
    /// server resolves from, updated (with the expiry metric) on each change.
    pub async fn start(
        self,
        client: &Client,
        state: &Arc<AppState>,
    ) -> anyhow::Result<Arc<CertSlot>> {
        let (pair, spawn): (LoadedPair, Box<dyn FnOnce(OnLoad)>) = match self {
            Prepared::Files {
                reloader,
                pair,
                interval,
            } => {
                tracing::info!(
                    cert = %reloader.cert_path().display(),
                    interval = %format_duration(interval),
                    "certificates from files, reloaded when they change"
                );
                let source = reloader.cert_path().display().to_string();
                wi_certs::files::log_installed(&pair, &source, "serving certificate loaded");
                let not_after = pair.not_after;
                (
                    pair,
                    Box::new(move |on_load| {
                        tokio::spawn(wi_certs::files::watch(
                            reloader, not_after, interval, on_load,
                        ));
                    }),
                )
            }
            Prepared::SelfManaged(settings) => {
                let (manager, pair) =
                    Manager::bootstrap(client.clone(), settings, state.certs_ready.clone()).await?;
                (
                    pair,
                    Box::new(move |on_load| {
                        manager.spawn(on_load);
                    }),
                )
            }
        };
        let gauge = state.metrics.serving_cert_expiry.clone();
        gauge.set(pair.not_after.unix_timestamp());
        let slot = CertSlot::new(pair.certified_key.clone());
        let on_load: OnLoad = {
            let slot = slot.clone();
            Arc::new(move |pair: &LoadedPair| {
                slot.set(pair.certified_key.clone());
                gauge.set(pair.not_after.unix_timestamp());
            })
        };
        spawn(on_load);
        Ok(slot)
    }
}
