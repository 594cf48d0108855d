//! `wi-webhook serve`: the admission webhook over TLS, and the plain operations port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kube::Client;

mod certificates;

use super::{MutationArgs, NativeSidecar, upstream};
use crate::admission::Admitter;
use crate::api::{self, AppState, tls};
use crate::policy::Policy;
use crate::serviceaccounts::ServiceAccounts;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TlsVersion {
    #[value(name = "1.2")]
    V1_2,
    #[value(name = "1.3")]
    V1_3,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the admission (TLS) listener (HOST:PORT, or :PORT for every interface).
    #[arg(long, env = "WI_LISTEN", default_value = "0.0.0.0:9443", value_parser = upstream::listen_addr)]
    pub listen: SocketAddr,

    /// Lowest TLS version accepted.
    #[arg(long, env = "WI_TLS_MIN_VERSION", value_enum, default_value = "1.3")]
    pub tls_min_version: TlsVersion,

    /// Address of the plain-HTTP listener for /metrics, /healthz and /readyz (upstream's
    /// --metrics-addr is an alias).
    #[arg(long, alias = "metrics-addr", env = "WI_METRICS_LISTEN", default_value = "0.0.0.0:8095", value_parser = upstream::listen_addr)]
    pub metrics_listen: SocketAddr,

    /// Also serve /healthz and /readyz on this address, as upstream's --health-addr (e.g.
    /// :9440), for probes that expect them there.
    #[arg(long, env = "WI_HEALTH_ADDR", value_parser = upstream::listen_addr, value_name = "ADDR")]
    pub health_addr: Option<SocketAddr>,

    /// Metrics format: prometheus, the only one (accepted for upstream's --metrics-backend).
    #[arg(long, env = "WI_METRICS_BACKEND", default_value = "prometheus", value_parser = upstream::metrics_backend)]
    pub metrics_backend: String,

    /// Upstream's custom token endpoint: not supported.
    #[arg(long, hide = true, value_parser = upstream::refused(
        "custom-token-endpoint-annotation-suffix",
        "custom token endpoints are not injected; the token's audience is --audience",
    ))]
    pub custom_token_endpoint_annotation_suffix: Option<String>,

    /// Upstream's custom token endpoint: not supported.
    #[arg(long, hide = true, value_parser = upstream::refused(
        "custom-token-endpoint-audience",
        "custom token endpoints are not injected; the token's audience is --audience",
    ))]
    pub custom_token_endpoint_audience: Option<String>,

    /// Largest accepted request body, in bytes; larger ones get 413.
    #[arg(long, env = "WI_BODY_LIMIT", default_value_t = api::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,

    /// Timeout of the direct ServiceAccount GET on a cache miss, in milliseconds.
    #[arg(long, env = "WI_SA_LOOKUP_TIMEOUT_MS", default_value_t = 2000)]
    pub sa_lookup_timeout_ms: u64,

    /// Admission requests decided at once; more wait up to --queue-timeout-ms for a slot,
    /// then get 503 (docs/reliability.md).
    #[arg(long, env = "WI_MAX_IN_FLIGHT", default_value_t = api::limit::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// How long a request beyond --max-in-flight waits for a slot, in milliseconds.
    #[arg(long, env = "WI_QUEUE_TIMEOUT_MS", default_value_t = api::limit::DEFAULT_QUEUE_TIMEOUT.as_millis() as u64)]
    pub queue_timeout_ms: u64,

    /// Open TLS connections at most; at the bound, new ones wait in the listen backlog.
    #[arg(long, env = "WI_MAX_CONNECTIONS", default_value_t = tls::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// A connection with no request for this long is closed, in seconds.
    #[arg(long, env = "WI_IDLE_TIMEOUT_SECONDS", default_value_t = tls::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout_seconds: u64,

    /// After SIGTERM, how long in-flight requests may take before connections are closed,
    /// in seconds. Keep it below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "WI_DRAIN_SECONDS", default_value_t = 20)]
    pub drain_seconds: u64,

    /// kubeconfig to use; default: in-cluster config, then ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub mutation: MutationArgs,

    #[command(flatten)]
    pub certs: certificates::CertArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Refuse a bad configuration before touching the network.
    args.mutation.config(true)?;
    // File mode: an unreadable, mismatched or expired pair is refused here.
    let certs = args.certs.prepare()?;

    let client = client(args.kubeconfig.as_deref()).await?;
    let native = match args.mutation.native_sidecar {
        NativeSidecar::Always => true,
        NativeSidecar::Never => false,
        NativeSidecar::Auto => native_sidecars_supported(&client).await?,
    };
    let config = args.mutation.config(native)?;
    tracing::info!(native_sidecar = native, authority_host = %config.authority_host, "configuration");

    let service_accounts = ServiceAccounts::watch(
        client.clone(),
        Duration::from_millis(args.sa_lookup_timeout_ms),
    );
    let mut policy = Policy::default().with_live(kube::Api::all(client.clone()));
    policy.reserved = crate::policy::reserved::Reserved {
        own_namespace: own_namespace(args.certs.cert_namespace.as_deref()),
        namespaces: Some(kube::Api::all(client.clone())),
    };
    let pools = crate::policy::watch::spawn(client.clone(), policy.clone());
    let events = crate::policy::events::spawn(client.clone(), std::env::var("POD_NAME").ok());
    let state = AppState::with_events(
        Admitter {
            config,
            service_accounts: service_accounts.clone(),
            policy: policy.clone(),
        },
        events,
    );
    crate::scoping::spawn(
        client.clone(),
        policy,
        crate::scoping::Names {
            mutating: args.certs.webhook_config_name.clone(),
            validating: args.certs.webhook_config_name.clone(),
        },
        state.clone(),
    );
    // Self-managed mode: the Secret and the caBundle are in place once this returns.
    let certs = certs.start(&client, &state).await?;
    let tls_config = tls::server_config(certs, args.tls_min_version == TlsVersion::V1_2)?;
    {
        let state = state.clone();
        tokio::spawn(async move {
            service_accounts.wait_synced().await;
            // The watch task owns the writer for the process's lifetime.
            let _ = pools.wait_until_ready().await;
            tracing::info!(
                serviceaccounts = service_accounts.cached(),
                agentpools = pools.len(),
                "caches synced; ready"
            );
            state.ready.store(true, Ordering::Release);
        });
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_listen))?;
    let health = api::health::router(state.clone());
    let mut metrics_stop = stop_rx.clone();
    let metrics_task = tokio::spawn(async move {
        axum::serve(metrics_listener, health)
            .with_graceful_shutdown(async move {
                let _ = metrics_stop.wait_for(|s| *s).await;
            })
            .await
    });

    // Upstream's separate probe port, when asked for.
    let health_task = match args.health_addr.filter(|a| *a != args.metrics_listen) {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--health-addr)"))?;
            let probes = api::health::probes(state.clone());
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, probes)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
            }))
        }
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, metrics = %args.metrics_listen, "serving");
    let app = api::limit::bounded(
        api::router(state.clone(), args.body_limit),
        api::limit::Limiter::counted(
            args.max_in_flight,
            Duration::from_millis(args.queue_timeout_ms),
            state.metrics.shed_requests.clone(),
        ),
    );
    let shutdown = async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        // Unready first, so endpoints stop sending us traffic while we drain.
        state.ready.store(false, Ordering::Release);
        let _ = stop_tx.send(true);
    };
    tls::serve_with(
        listener,
        Arc::new(tls_config),
        app,
        shutdown,
        Duration::from_secs(args.drain_seconds),
        tls::Limits {
            max_connections: args.max_connections,
            idle_timeout: Duration::from_secs(args.idle_timeout_seconds),
        },
    )
    .await;
    let _ = metrics_task.await;
    if let Some(task) = health_task {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The webhook's namespace: the flag (downward API), else its ServiceAccount's; `None`
/// outside a cluster.
fn own_namespace(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_string).or_else(|| {
        std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    })
}

pub async fn client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
    Ok(Client::try_from(kube_config(kubeconfig).await?)?)
}

/// The client configuration: the kubeconfig given, else in-cluster, else ~/.kube/config.
pub async fn kube_config(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    Ok(match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration found")?,
    })
}

/// Native sidecars (init containers with restartPolicy Always) are on by default from 1.29
/// and GA in 1.33; the webhook supports 1.32 or newer.
async fn native_sidecars_supported(client: &Client) -> anyhow::Result<bool> {
    let info = client
        .apiserver_version()
        .await
        .context("cannot ask the API server for its version (--native-sidecar auto)")?;
    let minor: u32 = info.minor.trim_end_matches('+').parse().unwrap_or(0);
    let major: u32 = info.major.parse().unwrap_or(0);
    let native = major > 1 || (major == 1 && minor >= 32);
    tracing::info!(version = %info.git_version, native, "API server version");
    Ok(native)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
