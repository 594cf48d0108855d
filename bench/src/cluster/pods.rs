//! Pod creation through the API server, with and without the webhook, the sides in turn:
//! the seed's pod in the namespace the webhook mutates, in one it skips, and in one only
//! an echo server (a canned patch) serves, as the ceiling of calling any webhook.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::control_plane::{ControlPlane, agent_pod, create, injected};
use super::webhook::Webhook;
use super::{CANNED_LABEL, CANNED_NAMESPACE, ClusterArgs, IGNORED_NAMESPACE, log};
use crate::results::PodCreate;
use crate::server::{Kind, PodKind, ServerProcess};
use crate::stats::Summary;
use crate::{fixtures, procfs};

/// Registers the webhook and the echo server, creates the pods, and stops the webhook;
/// the figures, and the webhook's resident memory after the creates (KiB).
pub async fn measure(
    cp: &ControlPlane,
    args: &ClusterArgs,
    webhook: &mut Webhook,
    pki: &Path,
    ca_pem: &str,
) -> anyhow::Result<(PodCreate, u64)> {
    // Serves the canned side until the creates are done.
    let _echo = register(cp, args, webhook, pki, ca_pem).await?;
    let sides = Sides::of(&cp.client)?;
    sides.wait_until_mutated().await?;

    log(format!(
        "creating {} pods on each of three sides, in turn",
        args.pods
    ));
    let admissions_before = procfs::cpu_nanos(webhook.pid());
    let calls_before = webhook_calls(&cp.client).await?;
    let log_path = args.state.join("bench-webhook-2.log");
    let log_before = std::fs::metadata(&log_path).map_or(0, |m| m.len());
    let (mut with, mut without, mut canned) = sides.create(args).await?;
    let webhook_cpu_per_create = procfs::cpu_nanos(webhook.pid()).saturating_sub(admissions_before)
        as f64
        / 1e3
        / (args.pods + args.warmup_pods) as f64;
    // Where the added time goes: the API server's own timing of its calls to the webhook
    // (TLS, HTTP/2, the decision; the mean, its histogram's buckets being too coarse for
    // percentiles), and the webhook's own latency per admission (its log).
    let calls = webhook_calls(&cp.client).await?.since(calls_before);
    let mut own = logged_latencies(&log_path, log_before)?;
    let own = Summary::of(&mut own);
    let with = Summary::of(&mut with);
    let without = Summary::of(&mut without);
    let canned = Summary::of(&mut canned);
    let added_p50_ms = (with.p50_us - without.p50_us) / 1e3;
    let added_p99_ms = (with.p99_us - without.p99_us) / 1e3;
    log(format!(
        "pod create p50 {:.2} ms with the webhook, {:.2} ms without: +{added_p50_ms:.2} ms (p99 +{added_p99_ms:.2} ms)",
        with.p50_us / 1e3,
        without.p50_us / 1e3
    ));

    // Leave the control plane usable: no configuration pointing at a stopped webhook.
    let _ = cp.kubectl(
        &[
            "delete",
            "mutatingwebhookconfiguration,validatingwebhookconfiguration",
            "wi-webhook",
            CANNED_CONFIGURATION,
            "--ignore-not-found",
        ],
        None,
    );
    let final_memory = procfs::memory(webhook.pid());
    webhook.stop();

    let pod_create = PodCreate {
        pods_each: args.pods,
        with_webhook: with,
        without_webhook: without,
        with_canned_webhook: Some(canned),
        added_p50_ms,
        added_p99_ms,
        webhook_cpu_us_per_create: webhook_cpu_per_create,
        apiserver_webhook_calls: Some(calls.count),
        apiserver_webhook_call_mean_us: Some(calls.mean_us()),
        webhook_logged_latency: Some(own),
    };
    Ok((pod_create, final_memory.rss_kib))
}

/// Registers the webhook's configurations (as `wi-webhook webhook-config` prints them) and
/// the echo server's; returns the running echo server.
async fn register(
    cp: &ControlPlane,
    args: &ClusterArgs,
    webhook: &Webhook,
    pki: &Path,
    ca_pem: &str,
) -> anyhow::Result<ServerProcess> {
    log("registering the webhook configurations");
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = Command::new(&args.webhook_bin)
        .args([
            "webhook-config",
            "--url",
            &format!("https://127.0.0.1:{}", webhook.port),
        ])
        .args(["--ca-bundle", &ca_bundle])
        .output()?;
    anyhow::ensure!(config.status.success(), "webhook-config failed");
    cp.kubectl(&["apply", "-f", "-"], Some(&config.stdout))?;
    let echo = ServerProcess::start(Kind::Echo, PodKind::Seed, pki, 0)?;
    let configurations: Api<MutatingWebhookConfiguration> = Api::all(cp.client.clone());
    create(
        &configurations,
        &canned_configuration(&format!("https://{}/mutate", echo.addr), &ca_bundle)?,
    )
    .await?;
    Ok(echo)
}

/// The three sides' pods and where they are created.
struct Sides {
    with: (Api<Pod>, Pod),
    without: (Api<Pod>, Pod),
    canned: (Api<Pod>, Pod),
}

impl Sides {
    fn of(client: &kube::Client) -> anyhow::Result<Sides> {
        let side = |ns: &str| -> anyhow::Result<(Api<Pod>, Pod)> {
            Ok((Api::namespaced(client.clone(), ns), agent_pod(ns)?))
        };
        Ok(Sides {
            with: side(fixtures::NAMESPACE)?,
            without: side(IGNORED_NAMESPACE)?,
            canned: side(CANNED_NAMESPACE)?,
        })
    }

    /// Waits until the API server calls both webhooks (it picks the configurations up within
    /// a moment), and checks that the skipped namespace is skipped.
    async fn wait_until_mutated(&self) -> anyhow::Result<()> {
        for ((api, pod), ns) in [
            (&self.with, fixtures::NAMESPACE),
            (&self.canned, CANNED_NAMESPACE),
        ] {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let dry = PostParams {
                    dry_run: true,
                    ..PostParams::default()
                };
                if api.create(&dry, pod).await.is_ok_and(|p| injected(&p)) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("pods in {ns} are still not mutated after 60 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let (api, pod) = &self.without;
        let created = api.create(&PostParams::default(), pod).await?;
        anyhow::ensure!(
            !injected(&created),
            "the webhook mutated a pod of the skipped namespace"
        );
        Ok(())
    }

    /// Creates the pods one at a time, the sides in turn (which goes first rotates, so none
    /// always follows another); each side's latencies in nanoseconds, warm-up left out.
    async fn create(&self, args: &ClusterArgs) -> anyhow::Result<(Vec<u64>, Vec<u64>, Vec<u64>)> {
        let mut with = Vec::with_capacity(args.pods);
        let mut without = Vec::with_capacity(args.pods);
        let mut canned = Vec::with_capacity(args.pods);
        let pp = PostParams::default();
        for i in 0..(args.warmup_pods + args.pods) {
            let measured = i >= args.warmup_pods;
            for side in (0..3).map(|k| (i + k) % 3) {
                let ((api, pod), samples, mutated) = match side {
                    0 => (&self.with, &mut with, true),
                    1 => (&self.without, &mut without, false),
                    _ => (&self.canned, &mut canned, true),
                };
                let t0 = Instant::now();
                let created = api.create(&pp, pod).await?;
                let took = t0.elapsed().as_nanos() as u64;
                anyhow::ensure!(
                    injected(&created) == mutated,
                    "a pod in {} was created {} its identity",
                    api.namespace().unwrap_or_default(),
                    if mutated { "without" } else { "with" }
                );
                if measured {
                    samples.push(took);
                }
            }
        }
        Ok((with, without, canned))
    }
}

/// The API server's histogram of its calls to the pod webhook
/// (`apiserver_admission_webhook_admission_duration_seconds`, CREATE, admit).
#[derive(Clone, Copy, Debug, Default)]
struct Calls {
    count: f64,
    sum_seconds: f64,
}

impl Calls {
    fn since(self, before: Calls) -> Calls {
        Calls {
            count: self.count - before.count,
            sum_seconds: self.sum_seconds - before.sum_seconds,
        }
    }

    fn mean_us(self) -> f64 {
        if self.count > 0.0 {
            self.sum_seconds / self.count * 1e6
        } else {
            0.0
        }
    }
}

async fn webhook_calls(client: &kube::Client) -> anyhow::Result<Calls> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    Ok(calls_in(&client.request_text(request).await?))
}

/// The pod webhook's admit calls in the API server's metrics text.
fn calls_in(text: &str) -> Calls {
    let mut calls = Calls::default();
    let metric = "apiserver_admission_webhook_admission_duration_seconds";
    for line in text.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !series.contains("name=\"pods.wi-webhook.dev\"") || !series.contains("type=\"admit\"") {
            continue;
        }
        let value: f64 = value.parse().unwrap_or(0.0);
        if series.starts_with(&format!("{metric}_count{{")) {
            calls.count += value;
        } else if series.starts_with(&format!("{metric}_sum{{")) {
            calls.sum_seconds += value;
        }
    }
    calls
}

/// `latency_us` of the mutated pod admissions the webhook logged after byte `from`.
fn logged_latencies(log: &Path, from: u64) -> anyhow::Result<Vec<u64>> {
    let text = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
    let text = String::from_utf8_lossy(&text[(from as usize).min(text.len())..]).into_owned();
    Ok(text
        .lines()
        .filter(|l| l.contains("decision=\"mutated\"") || l.contains("\"decision\":\"mutated\""))
        .filter_map(|l| {
            let at = l.find("latency_us")? + "latency_us".len();
            let digits: String = l[at..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            // In nanoseconds, as the other samples.
            digits.parse::<u64>().ok().map(|us| us * 1000)
        })
        .collect())
}

const CANNED_CONFIGURATION: &str = "wi-bench-canned";

/// The echo server's configuration: pod CREATE in the namespaces labelled `CANNED_LABEL`.
fn canned_configuration(
    url: &str,
    ca_bundle: &str,
) -> anyhow::Result<MutatingWebhookConfiguration> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": CANNED_CONFIGURATION},
        "webhooks": [{
            "name": "canned.wi-bench.dev",
            "clientConfig": {"url": url, "caBundle": ca_bundle},
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "scope": "Namespaced"
            }],
            "namespaceSelector": {"matchLabels": {CANNED_LABEL: "true"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10
        }]
    }))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_webhook_admit_calls_are_summed_from_the_metrics_text() {
        let text = r#"# HELP apiserver_admission_webhook_admission_duration_seconds x
apiserver_admission_webhook_admission_duration_seconds_bucket{name="pods.wi-webhook.dev",operation="CREATE",rejected="false",type="admit",le="0.005"} 3
apiserver_admission_webhook_admission_duration_seconds_sum{name="pods.wi-webhook.dev",operation="CREATE",rejected="false",type="admit"} 0.006
apiserver_admission_webhook_admission_duration_seconds_count{name="pods.wi-webhook.dev",operation="CREATE",rejected="false",type="admit"} 3
apiserver_admission_webhook_admission_duration_seconds_sum{name="pods.wi-webhook.dev",operation="CREATE",rejected="true",type="admit"} 0.002
apiserver_admission_webhook_admission_duration_seconds_count{name="pods.wi-webhook.dev",operation="CREATE",rejected="true",type="admit"} 1
apiserver_admission_webhook_admission_duration_seconds_sum{name="unlabelled-pods.wi-webhook.dev",operation="CREATE",rejected="false",type="validating"} 9
apiserver_admission_webhook_admission_duration_seconds_count{name="canned.wi-bench.dev",operation="CREATE",rejected="false",type="admit"} 7
"#;
        let calls = calls_in(text).since(Calls {
            count: 1.0,
            sum_seconds: 0.001,
        });
        assert_eq!(calls.count, 3.0);
        assert!(
            (calls.mean_us() - 2333.33).abs() < 0.01,
            "{}",
            calls.mean_us()
        );
        assert_eq!(Calls::default().mean_us(), 0.0);
    }

    #[test]
    fn logged_latencies_are_those_of_mutated_admissions_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("webhook.log");
        let before = "INFO admission uid=a decision=\"mutated\" latency_us=999\n";
        let after = concat!(
            "INFO admission uid=b decision=\"mutated\" rule=\"\" latency_us=120\n",
            "INFO admission uid=c decision=\"allowed\" latency_us=5\n",
            "{\"fields\":{\"decision\":\"mutated\",\"latency_us\":87}}\n",
        );
        std::fs::write(&log, format!("{before}{after}")).unwrap();
        let found = logged_latencies(&log, before.len() as u64).unwrap();
        assert_eq!(found, vec![120_000, 87_000]);
    }
}
