//! The API server's side of admission, as far as the parity test needs it: which webhooks of
//! the configurations `wi-webhook webhook-config` prints a CREATE goes to (rules,
//! namespaceSelector, objectSelector), the mutating ones first with their patches applied,
//! then the validating ones, each answered by the webhook's router in process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use base64::Engine;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use k8s_openapi::api::admissionregistration::v1::RuleWithOperations;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};
use tower::ServiceExt;
use wi_webhook::admission::Admitter;
use wi_webhook::api::{self, AppState};
use wi_webhook::webhookconfig::{self, Options, Target};

const BASE: &str = "https://webhook.parity.invalid";

/// A resource as the API serves it: (group, version, kind, resource).
pub type Gvkr = (&'static str, &'static str, &'static str, &'static str);

struct Hook {
    name: String,
    path: String,
    rules: Vec<RuleWithOperations>,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
}

/// What the cluster answered to one CREATE.
#[derive(Debug, Default)]
pub struct Admission {
    /// `status.message` of the first denial.
    pub denied: Option<String>,
    /// Every rule id in the answers' messages, warnings and audit annotations.
    pub rules: BTreeSet<String>,
    /// The webhooks that answered, in order.
    pub called: Vec<String>,
}

pub struct ApiServer {
    state: Arc<AppState>,
    mutating: Vec<Hook>,
    validating: Vec<Hook>,
}

impl ApiServer {
    pub fn new(admitter: Admitter) -> Self {
        let options = Options {
            target: Target::Url(BASE.into()),
            ca_bundle: None,
            timeout_seconds: 10,
        };
        let path = |url: Option<String>| url.unwrap_or_default().replace(BASE, "");
        let mutating = webhookconfig::mutating(&options)
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| Hook {
                name: w.name,
                path: path(w.client_config.url),
                rules: w.rules.unwrap_or_default(),
                namespace_selector: w.namespace_selector,
                object_selector: w.object_selector,
            })
            .collect();
        let validating = webhookconfig::validating(&options)
            .webhooks
            .unwrap_or_default()
            .into_iter()
            .map(|w| Hook {
                name: w.name,
                path: path(w.client_config.url),
                rules: w.rules.unwrap_or_default(),
                namespace_selector: w.namespace_selector,
                object_selector: w.object_selector,
            })
            .collect();
        ApiServer {
            state: AppState::new(admitter),
            mutating,
            validating,
        }
    }

    /// A CREATE of `object` in `namespace` by `user`, through every webhook that selects it.
    pub async fn create(
        &self,
        resource: Gvkr,
        namespace: &str,
        user: &str,
        mut object: Value,
    ) -> Admission {
        let mut out = Admission::default();
        let namespace_labels =
            BTreeMap::from([("kubernetes.io/metadata.name".to_string(), namespace.into())]);
        for (mutating, hooks) in [(true, &self.mutating), (false, &self.validating)] {
            for hook in hooks.iter() {
                let selected = hook.rules.iter().any(|r| matches(r, resource))
                    && selects(hook.namespace_selector.as_ref(), &namespace_labels)
                    && selects(hook.object_selector.as_ref(), &labels(&object));
                if !selected {
                    continue;
                }
                out.called.push(hook.name.clone());
                let response = self
                    .send(&hook.path, resource, namespace, user, &object)
                    .await;
                for w in response["warnings"].as_array().into_iter().flatten() {
                    out.rules.extend(rule_ids(w.as_str().unwrap_or_default()));
                }
                let annotations = response["auditAnnotations"].as_object();
                for a in annotations.into_iter().flat_map(|m| m.values()) {
                    out.rules.extend(rule_ids(a.as_str().unwrap_or_default()));
                }
                if response["allowed"] != json!(true) {
                    let message = response["status"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    out.rules.extend(rule_ids(&message));
                    out.denied = Some(message);
                    return out;
                }
                if let (true, Some(patch)) = (mutating, response["patch"].as_str()) {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(patch)
                        .expect("a base64 patch");
                    let patch: json_patch::Patch =
                        serde_json::from_slice(&bytes).expect("a JSON patch");
                    json_patch::patch(&mut object, &patch.0).expect("the patch applies");
                }
            }
        }
        out
    }

    async fn send(
        &self,
        path: &str,
        (group, version, kind, plural): Gvkr,
        namespace: &str,
        user: &str,
        object: &Value,
    ) -> Value {
        let gvk = json!({"group": group, "version": version, "kind": kind});
        let gvr = json!({"group": group, "version": version, "resource": plural});
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "parity",
                "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
                "namespace": namespace,
                "name": object.pointer("/metadata/name").cloned().unwrap_or(json!("")),
                "operation": "CREATE",
                "userInfo": {"username": user, "groups": ["system:authenticated"]},
                "object": object,
                "dryRun": false,
                "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
            }
        });
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&review).unwrap()))
            .unwrap();
        let response = api::router(self.state.clone(), 4 << 20)
            .oneshot(request)
            .await
            .expect("the router never fails");
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(
            status.is_success(),
            "{path}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let answer: Value = serde_json::from_slice(&body).expect("a JSON answer");
        answer["response"].clone()
    }
}

fn matches(rule: &RuleWithOperations, (group, version, _, plural): Gvkr) -> bool {
    let has = |list: &Option<Vec<String>>, value: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|v| v == "*" || v == value))
    };
    has(&rule.api_groups, group)
        && has(&rule.api_versions, version)
        && has(&rule.resources, plural)
        && has(&rule.operations, "CREATE")
        && rule
            .scope
            .as_deref()
            .is_none_or(|s| s == "*" || s == "Namespaced")
}

fn labels(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A label selector as the API server evaluates it (an absent selector selects everything).
fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let exact = selector.match_labels.iter().flatten();
    let expressions = selector.match_expressions.iter().flatten();
    exact.into_iter().all(|(k, v)| labels.get(k) == Some(v))
        && expressions.into_iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let value = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("unknown selector operator {other}"),
            }
        })
}

/// The rule ids (`[kebab-case]`) in a message, the policy denial's umbrella id left out.
pub fn rule_ids(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices('[') {
        let rest = &text[i + 1..];
        let Some(end) = rest.find(']') else { continue };
        let id = &rest[..end];
        let kebab = id.contains('-')
            && id.starts_with(|c: char| c.is_ascii_lowercase())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if kebab && id != "pool-policy" {
            out.insert(id.to_string());
        }
    }
    out
}
