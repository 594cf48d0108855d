//! Unit and property tests of the mutation on raw pod JSON.

use json_patch::PatchOperation;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::config::MutationConfig;
use crate::pod::PodView;

const TENANT: &str = "tenant-default";

fn cfg() -> MutationConfig {
    MutationConfig::new(TENANT)
}

fn sa(pairs: &[(&str, &str)]) -> SaAnnotations {
    pairs.iter().copied().collect()
}

fn agent_sa() -> SaAnnotations {
    sa(&[(keys::CLIENT_ID, "client-a"), (keys::TENANT_ID, "tenant-a")])
}

fn mutate_with(
    pod: &Value,
    sa: &SaAnnotations,
    pool: Option<&PoolIdentity>,
    cfg: &MutationConfig,
) -> Result<(json_patch::Patch, Value), Denial> {
    let view = PodView::new(pod, "ns/pod")?;
    let patch = mutate(
        &view,
        Context {
            sa_annotations: sa,
            pool,
        },
        cfg,
    )?
    .to_json_patch()
    .expect("the patch is JSON");
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch.0).expect("patch applies to its input");
    Ok((patch, out))
}

fn apply(pod: &Value) -> Value {
    mutate_with(pod, &agent_sa(), None, &cfg()).unwrap().1
}

fn env_of(c: &Value) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap().to_string(),
                        v["value"].as_str().unwrap_or("<ref>").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().map(|c| c["name"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {keys::USE_LABEL: "true"}}, "spec": spec})
}

fn with_annotations(mut p: Value, ann: &[(&str, &str)]) -> Value {
    let map: serde_json::Map<String, Value> =
        ann.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    p["metadata"]["annotations"] = Value::Object(map);
    p
}

#[test]
fn env_vars_are_appended_in_order_to_every_container() {
    let out = apply(&pod(json!({
        "initContainers": [{"name": "init", "image": "i"}],
        "containers": [{"name": "app", "image": "a", "env": [{"name": "KEEP", "value": "1"}]}]
    })));
    let expected_tail = vec![
        ("AZURE_CLIENT_ID".to_string(), "client-a".to_string()),
        ("AZURE_TENANT_ID".into(), "tenant-a".into()),
        (
            "AZURE_FEDERATED_TOKEN_FILE".into(),
            "/var/run/secrets/azure/tokens/azure-identity-token".into(),
        ),
        (
            "AZURE_AUTHORITY_HOST".into(),
            "https://login.microsoftonline.com/".into(),
        ),
    ];
    assert_eq!(env_of(&out["spec"]["initContainers"][0]), expected_tail);
    let app = env_of(&out["spec"]["containers"][0]);
    assert_eq!(app[0], ("KEEP".to_string(), "1".to_string()));
    assert_eq!(app[1..], expected_tail[..]);
}

#[test]
fn an_existing_env_var_is_never_overwritten() {
    let out = apply(&pod(json!({"containers": [{"name": "app", "env": [
        {"name": "AZURE_CLIENT_ID", "value": "mine"},
        {"name": "AZURE_TENANT_ID", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
    ]}]})));
    let env = env_of(&out["spec"]["containers"][0]);
    assert_eq!(env[0], ("AZURE_CLIENT_ID".into(), "mine".into()));
    assert_eq!(env[1], ("AZURE_TENANT_ID".into(), "<ref>".into()));
    assert_eq!(
        env.iter().filter(|(n, _)| n == "AZURE_CLIENT_ID").count(),
        1
    );
    assert_eq!(env.len(), 4);
}

#[test]
fn empty_values_are_not_injected() {
    let p = pod(json!({"containers": [{"name": "app"}]}));
    let (_, out) = mutate_with(
        &p,
        &sa(&[(keys::CLIENT_ID, ""), (keys::TENANT_ID, "")]),
        None,
        &cfg(),
    )
    .unwrap();
    let env: Vec<_> = env_of(&out["spec"]["containers"][0])
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(env, ["AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"]);
}

#[test]
fn tenant_precedence_sa_then_pool_then_webhook() {
    let p = pod(json!({"containers": [{"name": "app"}]}));
    let tenant = |sa_ann: &SaAnnotations, pool: Option<&PoolIdentity>| {
        let (_, out) = mutate_with(&p, sa_ann, pool, &cfg()).unwrap();
        env_of(&out["spec"]["containers"][0])
            .into_iter()
            .find(|(n, _)| n == "AZURE_TENANT_ID")
            .map(|(_, v)| v)
    };
    let pool = PoolIdentity {
        client_id: "pool-client".into(),
        tenant_id: Some("pool-tenant".into()),
    };
    assert_eq!(
        tenant(&agent_sa(), Some(&pool)).as_deref(),
        Some("tenant-a")
    );
    assert_eq!(
        tenant(&sa(&[]), Some(&pool)).as_deref(),
        Some("pool-tenant")
    );
    assert_eq!(tenant(&sa(&[]), None).as_deref(), Some(TENANT));
    assert_eq!(tenant(&sa(&[(keys::TENANT_ID, "")]), Some(&pool)), None);
}

#[test]
fn client_id_falls_back_to_the_pool() {
    let p = pod(json!({"containers": [{"name": "app"}]}));
    let pool = PoolIdentity {
        client_id: "pool-client".into(),
        tenant_id: None,
    };
    let (_, out) = mutate_with(&p, &sa(&[]), Some(&pool), &cfg()).unwrap();
    assert_eq!(env_of(&out["spec"]["containers"][0])[0].1, "pool-client");
    let (_, out) = mutate_with(&p, &sa(&[]), None, &cfg()).unwrap();
    assert_ne!(
        env_of(&out["spec"]["containers"][0])[0].0,
        "AZURE_CLIENT_ID"
    );
}

#[test]
fn token_expiration_pod_over_sa_over_default_within_range() {
    let exp = |pod_ann: Option<&str>, sa_ann: Option<&str>| {
        let mut p = pod(json!({"containers": [{"name": "app"}]}));
        if let Some(v) = pod_ann {
            p = with_annotations(p, &[(keys::TOKEN_EXPIRATION, v)]);
        }
        let mut s = agent_sa();
        if let Some(v) = sa_ann {
            s.insert(keys::TOKEN_EXPIRATION, v.into());
        }
        mutate_with(&p, &s, None, &cfg()).map(|(_, out)| {
            out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
                ["expirationSeconds"]
                .as_i64()
                .unwrap()
        })
    };
    assert_eq!(exp(None, None), Ok(3600));
    assert_eq!(exp(None, Some("7200")), Ok(7200));
    assert_eq!(exp(Some("86400"), Some("7200")), Ok(86400));
    assert_eq!(exp(Some("3600"), None), Ok(3600));
    // Empty is unset, as upstream reads it: the Pod's falls through to the ServiceAccount's.
    assert_eq!(exp(Some(""), None), Ok(3600));
    assert_eq!(exp(Some(""), Some("7200")), Ok(7200));
    assert_eq!(exp(None, Some("")), Ok(3600));
    assert_eq!(exp(Some(""), Some("")), Ok(3600));
    for bad in ["3599", "86401", "abc", " ", "1h", "-3600"] {
        let err = exp(Some(bad), None).unwrap_err();
        assert_eq!(err.rule, "token-expiration");
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains(keys::TOKEN_EXPIRATION),
            "{}",
            err.message
        );
        assert!(err.message.contains(&format!("{bad:?}")), "{}", err.message);
        assert!(err.message.contains("3600..=86400"), "{}", err.message);
    }
    // A bad ServiceAccount value denies too, and says where it came from.
    let err = exp(None, Some("10")).unwrap_err();
    assert!(
        err.message.contains("on the ServiceAccount"),
        "{}",
        err.message
    );
}

#[test]
fn volume_and_read_only_mount_in_the_seed_layout() {
    let out = apply(&pod(json!({"containers": [{"name": "app"}]})));
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "azure-identity-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "api://AzureADTokenExchange", "expirationSeconds": 3600, "path": "azure-identity-token"}}]}}])
    );
    assert_eq!(
        out["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}])
    );
}

#[test]
fn volume_name_mount_path_and_audience_are_configurable() {
    let mut c = cfg();
    c.volume_name = "wi-token".into();
    c.mount_path = "/var/run/wi".into();
    c.audience = "api://custom".into();
    let (_, out) = mutate_with(
        &pod(json!({"containers": [{"name": "app"}]})),
        &agent_sa(),
        None,
        &c,
    )
    .unwrap();
    let app = &out["spec"]["containers"][0];
    assert_eq!(app["volumeMounts"][0]["name"], "wi-token");
    assert_eq!(app["volumeMounts"][0]["mountPath"], "/var/run/wi");
    assert_eq!(env_of(app)[2].1, "/var/run/wi/azure-identity-token");
    assert_eq!(out["spec"]["volumes"][0]["name"], "wi-token");
    assert_eq!(
        out["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "api://custom"
    );
}

#[test]
fn skipped_containers_get_nothing_but_the_volume_is_still_added() {
    let p = with_annotations(
        pod(
            json!({"initContainers": [{"name": "init"}], "containers": [{"name": "app"}, {"name": "side"}]}),
        ),
        &[(keys::SKIP_CONTAINERS, " init ; app;")],
    );
    let out = apply(&p);
    assert!(out["spec"]["initContainers"][0].get("env").is_none());
    assert!(out["spec"]["containers"][0].get("volumeMounts").is_none());
    assert_eq!(env_of(&out["spec"]["containers"][1]).len(), 4);
    let all = with_annotations(
        pod(json!({"containers": [{"name": "app"}]})),
        &[(keys::SKIP_CONTAINERS, "app")],
    );
    assert_eq!(
        apply(&all)["spec"]["volumes"][0]["name"],
        "azure-identity-token"
    );
}

#[test]
fn authority_host_follows_the_configuration() {
    let mut c = cfg();
    c.authority_host = crate::config::authority_host_for("AzureChinaCloud").unwrap();
    let (_, out) = mutate_with(
        &pod(json!({"containers": [{"name": "app"}]})),
        &agent_sa(),
        None,
        &c,
    )
    .unwrap();
    assert_eq!(
        env_of(&out["spec"]["containers"][0])[3].1,
        "https://login.chinacloudapi.cn/"
    );
}

fn proxy_pod(value: &str) -> Value {
    with_annotations(
        pod(json!({"initContainers": [{"name": "setup"}], "containers": [{"name": "app"}]})),
        &[(keys::INJECT_PROXY, value)],
    )
}

#[test]
fn proxy_native_sidecar_goes_right_after_the_init_container_which_goes_first() {
    let out = apply(&proxy_pod("true"));
    let inits = &out["spec"]["initContainers"];
    assert_eq!(names(inits), ["azwi-proxy-init", "azwi-proxy", "setup"]);
    assert_eq!(inits[1]["restartPolicy"], "Always");
    assert_eq!(names(&out["spec"]["containers"]), ["app"]);
    let init = &inits[0];
    assert_eq!(init["image"], crate::config::DEFAULT_PROXY_INIT_IMAGE);
    assert_eq!(init["imagePullPolicy"], "IfNotPresent");
    assert_eq!(env_of(init)[0], ("PROXY_PORT".into(), "8000".into()));
    assert_eq!(env_of(init).len(), 5);
    assert_eq!(
        init["securityContext"],
        json!({"capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}, "privileged": true, "runAsNonRoot": false, "runAsUser": 0})
    );
    let side = &inits[1];
    assert_eq!(
        side["args"],
        json!(["--proxy-port=8000", "--log-level=info"])
    );
    assert_eq!(side["ports"], json!([{"containerPort": 8000}]));
    assert_eq!(
        side["lifecycle"]["postStart"]["exec"]["command"],
        json!(["/proxy", "--proxy-port=8000", "--probe", "--log-level=info"])
    );
    assert_eq!(
        side["securityContext"],
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "privileged": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true})
    );
    assert_eq!(
        side["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/azure/tokens"
    );
}

#[test]
fn proxy_without_native_sidecars_is_prepended_to_containers() {
    let mut c = cfg();
    c.native_sidecar = false;
    let (_, out) = mutate_with(&proxy_pod("TRUE"), &agent_sa(), None, &c).unwrap();
    assert_eq!(
        names(&out["spec"]["initContainers"]),
        ["azwi-proxy-init", "setup"]
    );
    assert_eq!(names(&out["spec"]["containers"]), ["azwi-proxy", "app"]);
    assert!(out["spec"]["containers"][0].get("restartPolicy").is_none());
}

#[test]
fn the_proxy_containers_follow_each_pods_identity_port_and_skip_list() {
    // One thread, pods in turn: the per-thread cache of the completed proxy containers must
    // never hand one pod's identity, port or skip list to the next.
    let client = |c: &Value| {
        env_of(c)
            .into_iter()
            .find(|(n, _)| n == "AZURE_CLIENT_ID")
            .map(|(_, v)| v)
    };
    let other_sa = sa(&[(keys::CLIENT_ID, "client-b"), (keys::TENANT_ID, "tenant-b")]);
    for round in 0..2 {
        for (sa, want) in [(agent_sa(), "client-a"), (other_sa.clone(), "client-b")] {
            let (_, out) = mutate_with(&proxy_pod("true"), &sa, None, &cfg()).unwrap();
            let inits = &out["spec"]["initContainers"];
            assert_eq!(client(&inits[0]).as_deref(), Some(want), "round {round}");
            assert_eq!(client(&inits[1]).as_deref(), Some(want), "round {round}");
        }
        let annotated = |extra: (&str, &str)| {
            let mut p = proxy_pod("true");
            p["metadata"]["annotations"][extra.0] = json!(extra.1);
            p
        };
        let ported = annotated((keys::PROXY_PORT, "9100"));
        let (_, out) = mutate_with(&ported, &agent_sa(), None, &cfg()).unwrap();
        assert_eq!(env_of(&out["spec"]["initContainers"][0])[0].1, "9100");
        let skipped = annotated((keys::SKIP_CONTAINERS, keys::PROXY_CONTAINER));
        let (_, out) = mutate_with(&skipped, &agent_sa(), None, &cfg()).unwrap();
        let inits = &out["spec"]["initContainers"];
        assert_eq!(client(&inits[0]).as_deref(), Some("client-a"));
        assert_eq!(client(&inits[1]), None, "a skipped proxy gets no identity");
    }
}

#[test]
fn only_true_in_any_case_injects_the_proxy() {
    for v in ["false", "False", "yes", "1", ""] {
        let out = apply(&proxy_pod(v));
        assert_eq!(names(&out["spec"]["initContainers"]), ["setup"], "{v:?}");
    }
    assert_eq!(
        names(&apply(&proxy_pod(" True "))["spec"]["initContainers"])[0],
        "azwi-proxy-init"
    );
}

#[test]
fn proxy_port_is_validated_and_used() {
    let port = |v: &str| {
        let p = with_annotations(
            pod(json!({"containers": [{"name": "app"}]})),
            &[(keys::INJECT_PROXY, "true"), (keys::PROXY_PORT, v)],
        );
        mutate_with(&p, &agent_sa(), None, &cfg())
    };
    let (_, out) = port("9000").unwrap();
    assert_eq!(env_of(&out["spec"]["initContainers"][0])[0].1, "9000");
    assert_eq!(
        out["spec"]["initContainers"][1]["args"][0],
        "--proxy-port=9000"
    );
    assert_eq!(
        out["spec"]["initContainers"][1]["ports"][0]["containerPort"],
        9000
    );
    for bad in ["0", "65536", "-1", "abc", "80.5"] {
        let err = port(bad).unwrap_err();
        assert_eq!(err.rule, "proxy-port", "{bad}");
        assert!(err.message.contains(keys::PROXY_PORT) && err.message.contains("1..65535"));
    }
}

#[test]
fn host_network_with_proxy_is_denied_but_without_proxy_is_fine() {
    let mut p = proxy_pod("true");
    p["spec"]["hostNetwork"] = json!(true);
    let err = mutate_with(&p, &agent_sa(), None, &cfg()).unwrap_err();
    assert_eq!(err.rule, "proxy-host-network");
    assert!(err.message.contains("hostNetwork"));
    let mut p = pod(json!({"hostNetwork": true, "containers": [{"name": "app"}]}));
    p["spec"]["hostNetwork"] = json!(true);
    assert!(mutate_with(&p, &agent_sa(), None, &cfg()).is_ok());
}

#[test]
fn existing_proxy_containers_are_not_duplicated() {
    let p = with_annotations(
        pod(
            json!({"initContainers": [{"name": "azwi-proxy-init"}], "containers": [{"name": "app"}]}),
        ),
        &[(keys::INJECT_PROXY, "true")],
    );
    let out = apply(&p);
    assert_eq!(
        names(&out["spec"]["initContainers"]),
        ["azwi-proxy-init", "azwi-proxy"]
    );
    let p = with_annotations(
        pod(json!({"containers": [{"name": "azwi-proxy"}, {"name": "app"}]})),
        &[(keys::INJECT_PROXY, "true")],
    );
    let out = apply(&p);
    assert_eq!(names(&out["spec"]["initContainers"]), ["azwi-proxy-init"]);
    assert_eq!(names(&out["spec"]["containers"]), ["azwi-proxy", "app"]);
}

#[test]
fn injected_containers_can_be_skipped_too() {
    let p = with_annotations(
        pod(json!({"containers": [{"name": "app"}]})),
        &[
            (keys::INJECT_PROXY, "true"),
            (keys::SKIP_CONTAINERS, "azwi-proxy"),
        ],
    );
    let out = apply(&p);
    let side = &out["spec"]["initContainers"][1];
    assert_eq!(side["name"], "azwi-proxy");
    assert!(side.get("env").is_none() && side.get("volumeMounts").is_none());
    assert_eq!(env_of(&out["spec"]["initContainers"][0]).len(), 5);
}

#[test]
fn ephemeral_containers_are_left_alone() {
    let p =
        pod(json!({"containers": [{"name": "app"}], "ephemeralContainers": [{"name": "debug"}]}));
    let out = apply(&p);
    assert_eq!(
        out["spec"]["ephemeralContainers"],
        json!([{"name": "debug"}])
    );
}

#[test]
fn wrong_types_are_denied_with_the_field_named() {
    for (spec, field) in [
        (json!({"containers": "app"}), "spec.containers"),
        (
            json!({"containers": [{"name": "app", "env": {"A": "b"}}]}),
            "spec.containers[0].env",
        ),
        (json!({"containers": ["app"]}), "spec.containers[0]"),
        (
            json!({"containers": [{"name": "a", "volumeMounts": 3}]}),
            "spec.containers[0].volumeMounts",
        ),
        (json!({"containers": [], "volumes": {}}), "spec.volumes"),
    ] {
        let err = mutate_with(&pod(spec), &agent_sa(), None, &cfg()).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.contains(field), "{field}: {}", err.message);
    }
}

#[test]
fn operations_are_adds_that_never_replace_a_container_list() {
    let (patch, _) = mutate_with(&proxy_pod("true"), &agent_sa(), None, &cfg()).unwrap();
    for op in &patch.0 {
        let PatchOperation::Add(add) = op else {
            panic!("not an add: {op:?}")
        };
        let path = add.path.to_string();
        assert!(
            path != "/spec/containers" && path != "/spec/initContainers",
            "replaces a whole list: {path}"
        );
    }
}

// ---- properties over generated pods ----

fn arb_env() -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "AZURE_CLIENT_ID",
                "AZURE_TENANT_ID",
                "FOO",
                "BAR",
                "AZURE_AUTHORITY_HOST",
            ]),
            "[a-z0-9]{0,6}",
        ),
        0..4,
    )
    .prop_map(|pairs| {
        let mut seen = std::collections::BTreeSet::new();
        Value::Array(
            pairs
                .into_iter()
                .filter(|(n, _)| seen.insert(*n))
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect(),
        )
    })
}

fn arb_container(name: String) -> impl Strategy<Value = Value> {
    (
        prop::option::of(arb_env()),
        prop::option::of(prop::sample::select(vec![
            "/data",
            "/var/run/secrets/azure/tokens",
            "/var/run/secrets/azure/tokens/",
        ])),
        any::<bool>(),
    )
        .prop_map(move |(env, mount, future)| {
            let mut c = json!({"name": name, "image": "img"});
            if let Some(e) = env {
                c["env"] = e;
            }
            if let Some(m) = mount {
                c["volumeMounts"] = json!([{"name": "v", "mountPath": m}]);
            }
            if future {
                c["futureContainerField"] = json!({"nested": [1, 2]});
            }
            c
        })
}

fn arb_list(prefix: &'static str, max: usize) -> impl Strategy<Value = Option<Value>> {
    prop::option::of(
        prop::collection::vec(
            prop::sample::select(vec![
                format!("{prefix}a"),
                format!("{prefix}b"),
                format!("{prefix}c"),
                "azwi-proxy".to_string(),
                "azwi-proxy-init".to_string(),
            ]),
            0..max,
        )
        .prop_flat_map(|names| {
            let mut seen = std::collections::BTreeSet::new();
            let unique: Vec<String> = names
                .into_iter()
                .filter(|n| seen.insert(n.clone()))
                .collect();
            unique.into_iter().map(arb_container).collect::<Vec<_>>()
        })
        .prop_map(Value::Array),
    )
}

prop_compose! {
    pub(crate) fn arb_pod()(
        inits in arb_list("init-", 3),
        containers in arb_list("app-", 4),
        proxy in prop::sample::select(vec![None, Some("true"), Some("false"), Some("TRUE")]),
        skip in prop::option::of(prop::sample::select(vec!["app-a", " app-b ; init-a", "azwi-proxy;azwi-proxy-init"])),
        volume in any::<bool>(),
        future in any::<bool>(),
        native in any::<bool>(),
        generate in any::<bool>(),
    ) -> (Value, bool) {
        let mut spec = json!({});
        // Container names are unique across both lists in a valid pod.
        let init_names: Vec<Value> = inits.iter().flat_map(|l| l.as_array().unwrap().iter().map(|c| c["name"].clone())).collect();
        let mut containers = containers.unwrap_or_else(|| json!([{"name": "main"}]));
        containers.as_array_mut().unwrap().retain(|c| !init_names.contains(&c["name"]));
        if let Some(i) = inits { spec["initContainers"] = i; }
        spec["containers"] = containers;
        if volume { spec["volumes"] = json!([{"name": "azure-identity-token", "emptyDir": {}}]); }
        if future { spec["someFutureField"] = json!({"x": true}); }
        let mut p = pod(spec);
        if generate {
            p["metadata"].as_object_mut().unwrap().remove("name");
            p["metadata"]["generateName"] = json!("agent-");
        }
        if future { p["metadata"]["futureMeta"] = json!("kept"); }
        let mut ann = vec![];
        if let Some(v) = proxy { ann.push((keys::INJECT_PROXY, v)); }
        if let Some(s) = skip { ann.push((keys::SKIP_CONTAINERS, s)); }
        (with_annotations(p, &ann), native)
    }
}

/// Every value of `a` is in `b`: objects by key, arrays as an ordered subsequence.
fn contained(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .all(|(k, v)| y.get(k).is_some_and(|w| contained(v, w))),
        (Value::Array(x), Value::Array(y)) => {
            let mut it = y.iter();
            x.iter().all(|v| it.any(|w| contained(v, w)))
        }
        _ => a == b,
    }
}

fn no_duplicates(pod: &Value) -> Result<(), String> {
    let spec = &pod["spec"];
    let mut all_names = std::collections::BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap();
            if !all_names.insert(name) {
                return Err(format!("container {name} twice"));
            }
            let env = names(&c["env"]);
            let set: std::collections::BTreeSet<_> = env.iter().collect();
            if set.len() != env.len() {
                return Err(format!("duplicate env in {name}"));
            }
            let paths: Vec<_> = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["mountPath"].as_str().unwrap().trim_end_matches('/'))
                .collect();
            let set: std::collections::BTreeSet<_> = paths.iter().collect();
            if set.len() != paths.len() {
                return Err(format!("duplicate mountPath in {name}"));
            }
        }
    }
    let vols = names(&spec["volumes"]);
    let set: std::collections::BTreeSet<_> = vols.iter().collect();
    if set.len() != vols.len() {
        return Err("duplicate volume".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn mutation_applies_keeps_everything_and_is_idempotent((pod, native) in arb_pod()) {
        let mut c = cfg();
        c.native_sidecar = native;
        let (patch, out) = match mutate_with(&pod, &agent_sa(), None, &c) {
            Ok(r) => r,
            Err(d) => {
                // The only generated denial: a port or expiration is never generated bad.
                prop_assert!(false, "unexpected denial {d}");
                unreachable!()
            }
        };
        for op in &patch.0 {
            prop_assert!(matches!(op, PatchOperation::Add(_)), "not an add: {:?}", op);
        }
        prop_assert!(contained(&pod, &out), "something of the input was lost");
        prop_assert!(no_duplicates(&out).is_ok(), "{:?}", no_duplicates(&out));
        let typed = serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(out.clone());
        prop_assert!(typed.is_ok(), "result is not a Pod: {:?}", typed.err());
        let (again, _) = mutate_with(&out, &agent_sa(), None, &c).unwrap();
        prop_assert!(again.0.is_empty(), "second run patched: {:?}", again);
    }

    #[test]
    fn reinvocation_after_rename_and_new_container_only_touches_the_new_one(
        (pod, native) in arb_pod(),
        position in 0usize..3,
    ) {
        let mut c = cfg();
        c.native_sidecar = native;
        let (_, mut out) = mutate_with(&pod, &agent_sa(), None, &c).unwrap();
        // Another webhook renames the pod and adds a container.
        out["metadata"]["name"] = json!("renamed-by-someone-else");
        let containers = out["spec"]["containers"].as_array_mut().unwrap();
        let at = position.min(containers.len());
        containers.insert(at, json!({"name": "added-later", "image": "x"}));
        let (patch, out2) = mutate_with(&out, &agent_sa(), None, &c).unwrap();
        let skip = out["metadata"]["annotations"][keys::SKIP_CONTAINERS].as_str().unwrap_or("");
        let prefix = format!("/spec/containers/{at}/");
        for op in &patch.0 {
            prop_assert!(op.path().to_string().starts_with(&prefix), "touched {}", op.path());
        }
        if !skip.split(';').any(|s| s.trim() == "added-later") {
            let added = &out2["spec"]["containers"][at];
            prop_assert_eq!(env_of(added).len(), 4);
            prop_assert_eq!(&added["volumeMounts"][0]["mountPath"], "/var/run/secrets/azure/tokens");
        }
        prop_assert!(no_duplicates(&out2).is_ok());
        let (third, _) = mutate_with(&out2, &agent_sa(), None, &c).unwrap();
        prop_assert!(third.0.is_empty());
    }
}
