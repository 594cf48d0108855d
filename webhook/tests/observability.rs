//! The monitoring shipped with the webhook (manifests/observability and the chart's copy)
//! against the metrics the webhook really exports: every PromQL expression of the Grafana
//! dashboard and of the alert rules names only metrics a scrape of `/metrics` offers, so a
//! renamed or removed metric fails here instead of leaving a blank panel or an alert that
//! can never fire. Also the metrics those alerts rely on: denials by rule, cache sync.

mod common;
#[path = "observability/promql.rs"]
mod promql;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState};
use wi_webhook::config::MutationConfig;
use wi_webhook::policy::crd::Enforcement;
use wi_webhook::policy::{Policy, Pool};
use wi_webhook::serviceaccounts::{ServiceAccounts, store_of};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const NS: &str = "ado-agents-omtest1";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const CLIENT_ID: &str = "11111111-1111-1111-1111-111111111111";

/// One pool in Enforce mode, whose ServiceAccount `agent` and a stray `other` carry its
/// identity.
fn state() -> Arc<AppState> {
    let annotated = |name| {
        common::service_account(
            NS,
            name,
            &[("azure.workload.identity/client-id", CLIENT_ID)],
        )
    };
    let pool = Pool {
        name: "omtest1".into(),
        team: "platform".into(),
        client_id: CLIENT_ID.into(),
        tenant_id: None,
        namespaces: vec![NS.into()],
        service_accounts: vec!["agent".into()],
        enforcement: Enforcement::Enforce,
        created: String::new(),
        access: Default::default(),
    };
    AppState::new(Admitter {
        config: MutationConfig::new(TENANT),
        service_accounts: ServiceAccounts::from_store(store_of([
            annotated("agent"),
            annotated("other"),
        ])),
        policy: Policy::of(&[pool]),
    })
}

/// GET `/metrics` of the webhook's real operations router.
async fn scrape(state: &Arc<AppState>) -> String {
    let req = Request::builder()
        .method(Method::GET)
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let resp = api::health::router(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// A labelled pod CREATE in the pool's namespace, denied: `expiration` below the minimum
/// (rule token-expiration), or `service_account` not the pool's (pool-service-account, also
/// a pool violation).
async fn post_denied_pod(state: &Arc<AppState>, service_account: &str, expiration: &str) {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "agent-0",
            "labels": {"azure.workload.identity/use": "true"},
            "annotations": {"azure.workload.identity/service-account-token-expiration": expiration}
        },
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{"name": "agent", "image": "agent"}]
        }
    });
    let review = common::pod_review("uid-denied", NS, pod);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/mutate")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&review).unwrap()))
        .unwrap();
    let resp = api::router(state.clone(), 1 << 20)
        .oneshot(req)
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
}

/// Every PromQL expression shipped: (where, expression, is a Grafana variable query).
fn shipped_queries() -> Vec<(String, String, bool)> {
    let mut queries = Vec::new();
    for path in [
        "manifests/observability/wi-webhook-dashboard.json",
        "charts/wi-webhook/files/wi-webhook-dashboard.json",
    ] {
        let text = std::fs::read_to_string(repo().join(path)).unwrap();
        let dashboard: Value = serde_json::from_str(&text).unwrap();
        let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
        while let Some(panel) = panels.pop() {
            // Rows nest their panels.
            panels.extend(panel["panels"].as_array().into_iter().flatten());
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("every target has an expr");
                queries.push((
                    format!("{path}: {}", panel["title"]),
                    expr.to_owned(),
                    false,
                ));
            }
        }
        for variable in dashboard["templating"]["list"].as_array().unwrap() {
            if variable["type"] != "query" {
                continue;
            }
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())
                .expect("a variable's query");
            queries.push((
                format!("{path}: ${}", variable["name"]),
                query.to_owned(),
                true,
            ));
        }
    }
    for path in [
        "manifests/observability/prometheusrule.yaml",
        "charts/wi-webhook/files/prometheusrule.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join(path)).unwrap();
        let rule = serde_saphyr::from_str::<Value>(&text).unwrap();
        for group in rule["spec"]["groups"].as_array().unwrap() {
            for r in group["rules"].as_array().unwrap() {
                let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
                let expr = r["expr"].as_str().expect("every rule has an expr");
                queries.push((format!("{path}: {name}"), expr.to_owned(), false));
            }
        }
    }
    queries
}

#[tokio::test]
async fn every_dashboard_and_alert_query_names_exported_metrics() {
    let state = state();
    // Every labelled family has a sample: a denial that is also a pool violation.
    post_denied_pod(&state, "other", "3600").await;
    let exported = promql::exported_names(&scrape(&state).await);
    assert!(
        exported.contains("wi_webhook_admission_duration_seconds_bucket"),
        "{exported:?}"
    );
    let queries = shipped_queries();
    assert!(queries.len() > 20, "{} queries found", queries.len());
    let mut unknown = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr, variable) in &queries {
        let names = if *variable {
            promql::grafana_variable_metrics(expr)
        } else {
            promql::metric_names(expr)
        }
        .unwrap_or_else(|e| panic!("{place}: {expr:?}: {e}"));
        assert!(!names.is_empty(), "{place}: {expr:?} names no metric");
        for name in names {
            if !exported.contains(&name) {
                unknown.push(format!("{place}: {name}"));
            }
            used.insert(name);
        }
    }
    assert!(
        unknown.is_empty(),
        "queries name metrics /metrics does not export:\n{}\nexported: {exported:?}",
        unknown.join("\n")
    );
    // What the alerts are for is watched by at least one query.
    for name in [
        "wi_webhook_serving_cert_expiry_seconds",
        "wi_webhook_caches_synced",
        "wi_webhook_denials_total",
        "wi_webhook_shed_requests_total",
        "wi_webhook_admission_duration_seconds_bucket",
    ] {
        assert!(used.contains(name), "no query watches {name}");
    }
}

/// The check above fails for a query naming a metric that does not exist, and reads what
/// PromQL and Grafana put around metric names.
#[test]
fn the_query_reader_finds_metrics_and_only_metrics() {
    let names = |expr| promql::metric_names(expr).unwrap();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (namespace, le) (rate(wi_webhook_admission_duration_seconds_bucket{namespace=~"$namespace", x="a}b"}[$__rate_interval]))) > 0.25"#
        ),
        ["wi_webhook_admission_duration_seconds_bucket"]
    );
    assert_eq!(
        names(
            "sum without (pod) (a_total) / on (namespace) group_left (team) max(b) or absent(c) offset 5m"
        ),
        ["a_total", "b", "c"]
    );
    assert_eq!(
        names("(x > 0) - time() < 14 * 24 * 3600 and bool y"),
        ["x", "y"]
    );
    assert_eq!(names("sum by(rule)(rate(d[5m])) * 60 > 5"), ["d"]);
    assert_eq!(
        promql::grafana_variable_metrics(
            "label_values(wi_webhook_caches_synced{a=\"b\"}, namespace)"
        )
        .unwrap(),
        ["wi_webhook_caches_synced"]
    );
    assert!(promql::metric_names("rate(x{a=\"b}[5m])").is_err());

    let exported = promql::exported_names(
        "# TYPE wi_webhook_x counter\n# TYPE wi_webhook_h histogram\nwi_webhook_h_count 3\n# TYPE wi_webhook_g gauge\nwi_webhook_g 1\n",
    );
    for present in [
        "wi_webhook_x_total",
        "wi_webhook_h_bucket",
        "wi_webhook_h_sum",
        "wi_webhook_h_count",
        "wi_webhook_g",
    ] {
        assert!(exported.contains(present), "{present}: {exported:?}");
    }
    // A counter is queried by its sample name; a typo or a histogram's bare name is absent.
    for absent in [
        "wi_webhook_x",
        "wi_webhook_h",
        "wi_webhook_nonexistent_total",
    ] {
        assert!(!exported.contains(absent), "{absent}");
    }
}

#[tokio::test]
async fn denials_are_counted_by_rule_and_cache_sync_is_a_gauge() {
    let state = state();
    let text = scrape(&state).await;
    assert!(text.contains("wi_webhook_caches_synced 0\n"), "{text}");
    post_denied_pod(&state, "agent", "60").await;
    post_denied_pod(&state, "agent", "60").await;
    post_denied_pod(&state, "other", "3600").await;
    state.ready.store(true, Ordering::Release);
    let text = scrape(&state).await;
    assert!(
        text.contains("wi_webhook_denials_total{rule=\"token-expiration\"} 2\n"),
        "{text}"
    );
    assert!(
        text.contains("wi_webhook_denials_total{rule=\"pool-service-account\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("wi_webhook_caches_synced 1\n"), "{text}");
}
