//! In-process decision time (BENCHMARKS.md, section 1):
//!
//!   cargo bench -p wi-webhook --bench decision
//!
//! - `review/*`: `Admitter::review` on an encoded AdmissionReview body: decoding, the
//!   ServiceAccount lookup (cache hit), the pool checks and the mutation; the answer is built
//!   but not encoded.
//! - `router/*`: the same body through the admission router in process (no sockets): adds
//!   the HTTP layer, the answer's JSON encoding, metrics and the log line (text, the
//!   binary's default; `log=json`: JSON lines, as the shipped manifests configure it).
//! - `mutate/*` and `evaluate/*`: `mutation::mutate` and `policy::rules::evaluate` alone on
//!   an already parsed pod.
//! - `pools=N`: the same decisions with 1 and 5,000 AgentPools in the index.

#[path = "../../bench/src/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::collections::BTreeMap;
use std::hint::black_box;

use axum::body::Body;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::Request;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use tower::ServiceExt;
use tracing_subscriber::util::SubscriberInitExt;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState};
use wi_webhook::config::MutationConfig;
use wi_webhook::logging;
use wi_webhook::mutation::{self, Context};
use wi_webhook::pod::{PodView, display_name};
use wi_webhook::policy::crd::{AgentPool, AgentPoolSpec};
use wi_webhook::policy::index::PoolIndex;
use wi_webhook::policy::{Policy, Pool, Subject, rules};
use wi_webhook::serviceaccounts::{SaAnnotations, ServiceAccounts, store_of};

// The allocator of the wi-webhook binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn pool_list(extra: usize) -> Vec<Pool> {
    fixtures::pools(extra)
        .into_iter()
        .map(|(name, spec)| {
            let spec: AgentPoolSpec = serde_json::from_value(spec).expect("an AgentPool spec");
            Pool::from_resource(&AgentPool::new(&name, spec)).expect("a named pool")
        })
        .collect()
}

fn seed_annotations() -> BTreeMap<String, String> {
    [
        (
            "azure.workload.identity/client-id".to_string(),
            fixtures::CLIENT_ID.to_string(),
        ),
        (
            "azure.workload.identity/tenant-id".to_string(),
            fixtures::TENANT.to_string(),
        ),
    ]
    .into()
}

fn admitter(pools: &[Pool]) -> Admitter {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(fixtures::SERVICE_ACCOUNT.into()),
            namespace: Some(fixtures::NAMESPACE.into()),
            annotations: Some(seed_annotations()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    Admitter {
        config: MutationConfig::new(fixtures::TENANT),
        service_accounts: ServiceAccounts::from_store(store_of([sa])),
        policy: Policy::of(pools),
    }
}

/// The pods of section 1, by name.
fn pods() -> Vec<(&'static str, Value)> {
    vec![
        ("seed-agent", fixtures::seed_pod()),
        ("12-containers-3-init", fixtures::wide_pod()),
        ("300KiB", fixtures::large_pod(300)),
    ]
}

/// Every pod must be mutated (not denied): the benchmark measures the path that injects.
fn check_mutated(admitter: &Admitter, name: &str, body: &[u8]) {
    let outcome = futures::executor::block_on(admitter.review(body)).expect("a review");
    assert_eq!(
        outcome.decision.as_str(),
        "mutated",
        "{name}: {:?}",
        outcome.review.response
    );
}

fn review(c: &mut Criterion) {
    let one = pool_list(0);
    let many = pool_list(4_999);
    let mut group = c.benchmark_group("review");
    for (name, pod) in pods() {
        let body = fixtures::review(&pod, "bench-uid");
        group.throughput(Throughput::Bytes(body.len() as u64));
        for (pools, list) in [(1, &one), (5_000, &many)] {
            if pools != 1 && name != "seed-agent" {
                continue;
            }
            let admitter = admitter(list);
            check_mutated(&admitter, name, &body);
            group.bench_with_input(
                BenchmarkId::new(name, format!("pools={pools}")),
                &body,
                |b, body| {
                    b.iter(|| {
                        futures::executor::block_on(admitter.review(black_box(body)))
                            .expect("a review")
                    })
                },
            );
        }
    }
    group.finish();
}

fn router(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    // The log line of every admission is formatted as the binary does by default (text),
    // written nowhere; the shipped manifests log JSON lines (WI_LOG_JSON=true): the seed's
    // pod once more with that formatter, scoped to its benchmark.
    let info = || tracing_subscriber::EnvFilter::new("info");
    let _ = logging::subscriber(info(), false, false, std::io::sink).try_init();
    let json_log = logging::subscriber(info(), true, false, std::io::sink);
    let mut group = c.benchmark_group("router");
    for (name, pod) in pods() {
        let body = bytes_of(fixtures::review(&pod, "bench-uid"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        let state = AppState::new(admitter(&pool_list(0)));
        let app = api::router(state, api::DEFAULT_BODY_LIMIT);
        let answer = |body: &axum::body::Bytes| {
            runtime.block_on(async {
                let req = Request::post("/mutate")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(body.clone()))
                    .expect("a request");
                let resp = app.clone().oneshot(req).await.expect("an answer");
                assert_eq!(resp.status(), http::StatusCode::OK);
                resp.into_body().collect().await.expect("a body").to_bytes()
            })
        };
        group.bench_with_input(BenchmarkId::new(name, "pools=1"), &body, |b, body| {
            b.iter(|| answer(body))
        });
        if name == "seed-agent" {
            group.bench_with_input(
                BenchmarkId::new(name, "pools=1,log=json"),
                &body,
                |b, body| tracing::dispatcher::with_default(&json_log, || b.iter(|| answer(body))),
            );
        }
    }
    group.finish();
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

fn parts(c: &mut Criterion) {
    let cfg = MutationConfig::new(fixtures::TENANT);
    let token_file = cfg.token_file();
    let annotations = SaAnnotations::of(&seed_annotations());
    let indexes = [
        (1, PoolIndex::build(&pool_list(0))),
        (5_000, PoolIndex::build(&pool_list(4_999))),
    ];
    let pool = Some(wi_webhook::mutation::PoolIdentity {
        client_id: fixtures::CLIENT_ID.into(),
        tenant_id: Some(fixtures::TENANT.into()),
    });
    let ctx = Context {
        sa_annotations: &annotations,
        pool: pool.as_ref(),
    };
    let pods = pods();
    let views: Vec<(&str, String)> = pods
        .iter()
        .map(|(name, pod)| (*name, display_name(pod, fixtures::NAMESPACE)))
        .collect();

    let mut group = c.benchmark_group("evaluate");
    for ((name, pod), (_, display)) in pods.iter().zip(&views) {
        let view = PodView::new(pod, display).expect("a pod");
        for (pools, index) in &indexes {
            if *pools != 1 && *name != "seed-agent" {
                continue;
            }
            let subject = Subject {
                pod: &view,
                namespace: fixtures::NAMESPACE,
                service_account: fixtures::SERVICE_ACCOUNT,
                sa_annotations: Some(&annotations),
                default_tenant: &cfg.tenant_id,
                token_file: &token_file,
                authority_host: &cfg.authority_host,
            };
            let evaluation = rules::evaluate(index, &subject);
            assert!(evaluation.violations.is_empty(), "{name}: {evaluation:?}");
            assert!(evaluation.pool.is_some(), "{name}: the seed's pool");
            group.bench_function(BenchmarkId::new(*name, format!("pools={pools}")), |b| {
                b.iter(|| rules::evaluate(black_box(index), black_box(&subject)))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("mutate");
    for ((name, pod), (_, display)) in pods.iter().zip(&views) {
        let view = PodView::new(pod, display).expect("a pod");
        let patch = mutation::mutate(&view, ctx, &cfg).expect("a patch");
        assert!(!patch.is_empty(), "{name}: something to inject");
        group.bench_function(BenchmarkId::new(*name, "pools=1"), |b| {
            b.iter(|| mutation::mutate(black_box(&view), ctx, &cfg))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("index-build");
    for extra in [0, 4_999] {
        let list = pool_list(extra);
        group.bench_function(
            BenchmarkId::new("build", format!("pools={}", extra + 1)),
            |b| b.iter(|| PoolIndex::build(black_box(&list))),
        );
    }
    group.finish();
}

criterion_group!(benches, review, router, parts);
criterion_main!(benches);
