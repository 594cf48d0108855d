//! Unit tests of the pool index, of `verdict` and of the claims in `rules::evaluate`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::crd::{Enforcement, PoolConflict};
use super::index::{Pool, PoolIndex, client_key};
use super::rules::{self, Subject, Violation, rule};
use super::{AUDIT_KEY, POLICY_RULE, verdict};
use crate::pod::PodView;

const A_CLIENT: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";
const B_CLIENT: &str = "0b7c2d1e-5a4f-4e3d-8c2b-1a0f9e8d7c6b";
const C_CLIENT: &str = "5c4b3a29-1807-4f6e-9d5c-4b3a29180706";

fn pool(name: &str, client_id: &str, namespaces: &[&str]) -> Pool {
    Pool {
        name: name.into(),
        team: format!("team-{name}"),
        client_id: client_id.into(),
        tenant_id: None,
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        service_accounts: vec![format!("agent-{name}")],
        enforcement: Enforcement::Enforce,
        created: String::new(),
        access: Default::default(),
    }
}

fn names(pools: &[std::sync::Arc<Pool>]) -> Vec<&str> {
    pools.iter().map(|p| p.name.as_str()).collect()
}

fn conflict(field: &str, value: &str, pool: &str) -> PoolConflict {
    PoolConflict {
        field: field.into(),
        value: value.into(),
        pool: pool.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// index.rs

#[test]
fn lookups_by_name_namespace_and_client_id() {
    let index = PoolIndex::build(&[
        pool("a", A_CLIENT, &["ns-a", "ns-a2"]),
        pool("b", B_CLIENT, &["ns-b"]),
    ]);
    assert_eq!(index.len(), 2);
    assert!(!index.is_empty());
    assert_eq!(index.get("a").map(|p| p.team.as_str()), Some("team-a"));
    assert!(index.get("c").is_none());
    assert_eq!(names(index.in_namespace("ns-a")), ["a"]);
    assert_eq!(names(index.in_namespace("ns-a2")), ["a"]);
    assert_eq!(names(index.in_namespace("ns-b")), ["b"]);
    assert!(index.in_namespace("elsewhere").is_empty());
    assert_eq!(names(index.owning(A_CLIENT)), ["a"]);
    assert_eq!(names(index.owning(B_CLIENT)), ["b"]);
    assert!(index.owning(C_CLIENT).is_empty());
    let mut all: Vec<&str> = index.pools().map(|p| p.name.as_str()).collect();
    all.sort();
    assert_eq!(all, ["a", "b"]);

    let empty = PoolIndex::build(&[]);
    assert!(empty.is_empty());
    assert_eq!(empty.len(), 0);
    assert!(empty.all_conflicts().is_empty());
    assert_eq!(empty.conflicted_pools(), 0);
}

#[test]
fn client_ids_are_compared_case_insensitively_and_trimmed() {
    assert_eq!(
        client_key(" 6F1A3F4E-2B7C-4F0E-9A51-3C2D1E0F9A8B "),
        A_CLIENT
    );
    let index = PoolIndex::build(&[
        pool("a", &A_CLIENT.to_uppercase(), &["ns-a"]),
        pool("b", B_CLIENT, &["ns-b"]),
    ]);
    assert_eq!(names(index.owning(A_CLIENT)), ["a"]);
    assert_eq!(names(index.owning(&A_CLIENT.to_uppercase())), ["a"]);
    assert_eq!(names(index.owning(&format!(" {A_CLIENT}\n"))), ["a"]);

    // The same GUID spelt in two cases in two pools is one identity in two pools.
    let index = PoolIndex::build(&[
        pool("a", &A_CLIENT.to_uppercase(), &["ns-a"]),
        pool("b", A_CLIENT, &["ns-b"]),
    ]);
    assert_eq!(names(index.owning(A_CLIENT)), ["a", "b"]);
    assert_eq!(
        index.conflicts_of(index.get("b").unwrap()),
        [conflict("clientId", A_CLIENT, "a")]
    );
    assert_eq!(index.conflicted_pools(), 2);
}

#[test]
fn namespaces_listed_twice_by_one_pool_are_not_a_conflict() {
    let index = PoolIndex::build(&[pool("a", A_CLIENT, &["ns-a", "ns-a"])]);
    assert_eq!(names(index.in_namespace("ns-a")), ["a"]);
    assert!(index.conflicts_of(index.get("a").unwrap()).is_empty());
    assert_eq!(index.conflicted_pools(), 0);
}

#[test]
fn conflicts_of_lists_each_shared_namespace_and_client_id_once_per_other_pool() {
    let index = PoolIndex::build(&[
        pool("a", A_CLIENT, &["ns-a", "shared", "shared-2"]),
        pool("b", A_CLIENT, &["ns-b", "shared"]),
        pool("c", C_CLIENT, &["shared", "shared-2"]),
        pool("d", B_CLIENT, &["ns-d"]),
    ]);
    assert_eq!(
        index.conflicts_of(index.get("a").unwrap()),
        [
            conflict("clientId", A_CLIENT, "b"),
            conflict("namespace", "shared", "b"),
            conflict("namespace", "shared", "c"),
            conflict("namespace", "shared-2", "c"),
        ]
    );
    assert_eq!(
        index.conflicts_of(index.get("c").unwrap()),
        [
            conflict("namespace", "shared", "a"),
            conflict("namespace", "shared", "b"),
            conflict("namespace", "shared-2", "a"),
        ]
    );
    assert!(index.conflicts_of(index.get("d").unwrap()).is_empty());
    // Lists sharing a namespace come back sorted by pool name, whatever the input order.
    assert_eq!(names(index.in_namespace("shared")), ["a", "b", "c"]);
    assert_eq!(index.conflicted_pools(), 3);

    // A pool that is not (yet) in the index: what it would share (the AgentPool admission).
    let newcomer = pool("e", &B_CLIENT.to_uppercase(), &["ns-a"]);
    assert_eq!(
        index.conflicts_of(&newcomer),
        [
            conflict("clientId", &B_CLIENT.to_uppercase(), "d"),
            conflict("namespace", "ns-a", "a"),
        ]
    );
}

#[test]
fn all_conflicts_is_deterministic_and_includes_pools_without_conflicts() {
    let pools = vec![
        pool("zeta", A_CLIENT, &["shared", "ns-z"]),
        pool("alpha", A_CLIENT, &["ns-a"]),
        pool("mid", B_CLIENT, &["shared"]),
        pool("clean", C_CLIENT, &["ns-c"]),
    ];
    let expected: BTreeMap<String, Vec<PoolConflict>> = [
        ("alpha", vec![conflict("clientId", A_CLIENT, "zeta")]),
        ("clean", vec![]),
        ("mid", vec![conflict("namespace", "shared", "zeta")]),
        (
            "zeta",
            vec![
                conflict("clientId", A_CLIENT, "alpha"),
                conflict("namespace", "shared", "mid"),
            ],
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Every input order gives the same map, with the same order inside each list.
    let mut orders = vec![pools.clone()];
    let mut reversed = pools.clone();
    reversed.reverse();
    orders.push(reversed);
    let mut rotated = pools.clone();
    rotated.rotate_left(2);
    orders.push(rotated);
    for order in &orders {
        let index = PoolIndex::build(order);
        for _ in 0..3 {
            assert_eq!(index.all_conflicts(), expected);
        }
        assert_eq!(
            index.all_conflicts().keys().collect::<Vec<_>>(),
            ["alpha", "clean", "mid", "zeta"]
        );
        assert_eq!(index.conflicted_pools(), 3);
    }
}

// ---------------------------------------------------------------------------------------------
// verdict

fn v(rule: &'static str, pool: &str, enforcement: Enforcement) -> Violation {
    Violation {
        rule,
        pool: pool.into(),
        team: format!("team-{pool}"),
        enforcement,
        message: format!("pod ns/p: {rule} of pool {pool}"),
    }
}

#[test]
fn no_violation_is_an_empty_verdict() {
    assert_eq!(verdict("ns/p", vec![]), Ok(super::Verdict::default()));
}

#[test]
fn any_enforce_violation_denies_with_every_rule_in_one_message() {
    let violations = vec![
        v(rule::ENV_OVERRIDE, "a", Enforcement::Audit),
        v(rule::SERVICE_ACCOUNT, "a", Enforcement::Warn),
        v(rule::ANOTHER_POOLS_IDENTITY, "b", Enforcement::Enforce),
        v(rule::CONFLICT, "a", Enforcement::Audit),
    ];
    let Err((denial, kept)) = verdict("ns/p", violations.clone()) else {
        panic!("an Enforce violation must deny");
    };
    assert_eq!(denial.code, 403);
    assert_eq!(denial.rule, POLICY_RULE);
    assert!(!denial.message.contains('\n'), "{}", denial.message);
    assert!(
        denial
            .message
            .starts_with("pod ns/p violates pool isolation: "),
        "{}",
        denial.message
    );
    for x in &violations {
        assert!(
            denial
                .message
                .contains(&format!("[{}] {}", x.rule, x.message)),
            "{} missing: {}",
            x.rule,
            denial.message
        );
    }
    // Every violation is kept for logs and metrics, whatever its enforcement.
    assert_eq!(kept, violations);
    // The rendering of the whole denial names the policy rule first.
    assert!(denial.to_string().starts_with("[pool-policy] pod ns/p"));
}

#[test]
fn only_warn_violations_become_warnings() {
    let violations = vec![
        v(rule::SERVICE_ACCOUNT, "a", Enforcement::Warn),
        v(rule::ENV_REFERENCE, "a", Enforcement::Warn),
    ];
    let verdict = verdict("ns/p", violations.clone()).expect("Warn allows");
    assert_eq!(
        verdict.warnings,
        [
            format!("[{}] {}", rule::SERVICE_ACCOUNT, violations[0].message),
            format!("[{}] {}", rule::ENV_REFERENCE, violations[1].message),
        ]
    );
    assert!(verdict.audit_annotations.is_empty());
    assert_eq!(verdict.violations, violations);
}

#[test]
fn only_audit_violations_become_one_audit_annotation() {
    let violations = vec![
        v(rule::CONFLICT, "a", Enforcement::Audit),
        v(rule::IDENTITY_MISMATCH, "b", Enforcement::Audit),
    ];
    let verdict = verdict("ns/p", violations.clone()).expect("Audit allows");
    assert!(verdict.warnings.is_empty());
    assert_eq!(verdict.audit_annotations.len(), 1);
    assert_eq!(
        verdict.audit_annotations[AUDIT_KEY],
        format!(
            "[{}] {}; [{}] {}",
            rule::CONFLICT,
            violations[0].message,
            rule::IDENTITY_MISMATCH,
            violations[1].message
        )
    );
    assert_eq!(verdict.violations, violations);
}

#[test]
fn warn_and_audit_together_split_into_warnings_and_the_annotation() {
    let violations = vec![
        v(rule::IDENTITY_MISMATCH, "a", Enforcement::Warn),
        v(rule::ANOTHER_POOLS_IDENTITY, "b", Enforcement::Audit),
    ];
    let verdict = verdict("ns/p", violations).expect("no Enforce violation");
    assert_eq!(verdict.warnings.len(), 1);
    assert!(verdict.warnings[0].starts_with("[pool-identity-mismatch]"));
    assert!(verdict.audit_annotations[AUDIT_KEY].starts_with("[identity-of-another-pool]"));
    assert_eq!(verdict.violations.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// rules::evaluate: the pod's pool claims

struct Pod {
    value: Value,
}

impl Pod {
    fn new(labels: Value, env: Value) -> Self {
        Pod {
            value: json!({
                "metadata": {"name": "p", "labels": labels},
                "spec": {"serviceAccountName": "agent-a", "containers": [{"name": "c", "env": env}]}
            }),
        }
    }

    fn evaluate(&self, index: &PoolIndex, namespace: &str) -> rules::Evaluation {
        let display = format!("{namespace}/p");
        let view = PodView::new(&self.value, &display).unwrap();
        rules::evaluate(
            index,
            &Subject {
                pod: &view,
                namespace,
                service_account: "agent-a",
                sa_annotations: Some(&Default::default()),
                default_tenant: "tenant",
                token_file: "/var/run/secrets/azure/tokens/azure-identity-token",
                authority_host: "https://login.microsoftonline.com/",
            },
        )
    }
}

fn rules_of(e: &rules::Evaluation) -> Vec<(&'static str, &str)> {
    e.violations
        .iter()
        .map(|v| (v.rule, v.pool.as_str()))
        .collect()
}

#[test]
fn a_pod_in_its_pools_namespace_belongs_to_it() {
    let index = PoolIndex::build(&[pool("a", A_CLIENT, &["ns-a"])]);
    let labelled = Pod::new(
        json!({"wi-webhook.dev/agent-pool": "a"}),
        json!([{"name": "AZP_POOL", "value": "a"}]),
    );
    let e = labelled.evaluate(&index, "ns-a");
    assert_eq!(e.pool.as_ref().map(|p| p.name.as_str()), Some("a"));
    assert!(e.violations.is_empty(), "{:?}", e.violations);
    assert_eq!(e.pool_identity().unwrap().client_id, A_CLIENT);
}

#[test]
fn a_pool_claim_outside_the_pools_namespaces_disagrees_and_owns_nothing() {
    let index = PoolIndex::build(&[pool("a", A_CLIENT, &["ns-a"])]);
    for pod in [
        Pod::new(json!({"wi-webhook.dev/agent-pool": "a"}), json!([])),
        Pod::new(json!({}), json!([{"name": "AZP_POOL", "value": "a"}])),
    ] {
        let e = pod.evaluate(&index, "elsewhere");
        assert!(e.pool.is_none(), "the pod must not get pool a's identity");
        assert!(e.pool_identity().is_none());
        assert_eq!(rules_of(&e), [(rule::CLAIMS_DISAGREE, "a")]);
        assert!(
            e.violations[0]
                .message
                .contains("runs in namespace elsewhere, which is not one of the pool's (ns-a)"),
            "{}",
            e.violations[0].message
        );
    }
    // A claim of a pool that does not exist, outside every pool: no pool, no violation.
    let e = Pod::new(json!({"wi-webhook.dev/agent-pool": "ghost"}), json!([]))
        .evaluate(&index, "elsewhere");
    assert!(e.pool.is_none());
    assert!(e.violations.is_empty());
}

#[test]
fn a_namespace_in_two_pools_belongs_to_the_older_and_denies_only_the_newer() {
    // Every pod of these tests runs as agent-a.
    let created = |p: Pool, at: &str| Pool {
        created: at.into(),
        service_accounts: vec!["agent-a".into()],
        ..p
    };
    // "b" is older despite its name: creation time decides, the name only breaks ties.
    let index = PoolIndex::build(&[
        created(
            pool("a", A_CLIENT, &["shared", "only-a"]),
            "2026-01-02T00:00:00Z",
        ),
        created(pool("b", B_CLIENT, &["shared"]), "2026-01-01T00:00:00Z"),
    ]);
    let e = Pod::new(json!({}), json!([])).evaluate(&index, "shared");
    assert_eq!(e.pool.as_ref().map(|p| p.name.as_str()), Some("b"));
    assert!(e.violations.is_empty(), "{:?}", e.violations);
    // The newer pool's pods are denied, in its other namespaces too.
    let e = Pod::new(json!({}), json!([])).evaluate(&index, "only-a");
    assert_eq!(rules_of(&e), [(rule::CONFLICT, "a")]);
    assert!(
        e.violations[0]
            .message
            .contains("remove namespace shared from one of the two AgentPools")
            && e.violations[0].message.contains("older pool b"),
        "{}",
        e.violations[0].message
    );
    // A pod in the shared namespace claiming the newer pool disagrees with the namespace.
    let e =
        Pod::new(json!({"wi-webhook.dev/agent-pool": "a"}), json!([])).evaluate(&index, "shared");
    assert!(e.pool.is_none());
    assert_eq!(
        rules_of(&e),
        [
            (rule::CLAIMS_DISAGREE, "a"),
            (rule::CLAIMS_DISAGREE, "b"),
            (rule::CONFLICT, "a"),
        ]
    );
}

#[test]
fn one_client_id_in_two_pools_is_the_older_pools() {
    // Same creation time: the name breaks the tie ("a" is older).
    let b = Pool {
        service_accounts: vec!["agent-a".into()],
        ..pool("b", A_CLIENT, &["ns-b"])
    };
    let index = PoolIndex::build(&[pool("a", A_CLIENT, &["ns-a"]), b]);
    let e = Pod::new(json!({"azure.workload.identity/use": "true"}), json!([]))
        .evaluate(&index, "ns-a");
    assert!(e.violations.is_empty(), "{:?}", e.violations);
    let e = Pod::new(json!({"azure.workload.identity/use": "true"}), json!([]))
        .evaluate(&index, "ns-b");
    assert_eq!(
        rules_of(&e),
        [(rule::ANOTHER_POOLS_IDENTITY, "a"), (rule::CONFLICT, "b")]
    );
}

#[test]
fn status_reports_conflicts_and_clears_them() {
    use crate::policy::crd::PoolConflict;
    use crate::policy::watch::desired_status;
    let clean = desired_status(&[], false);
    assert_eq!(clean.conflict_count, 0);
    assert_eq!(clean.conditions[0].type_, "Conflict");
    assert_eq!(clean.conditions[0].status, "False");
    let conflicts = [PoolConflict {
        field: "clientId".into(),
        value: "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b".into(),
        pool: "other".into(),
    }];
    let older = desired_status(&conflicts, false);
    assert!(
        older.conditions[0].message.contains("keep being admitted"),
        "{}",
        older.conditions[0].message
    );
    let status = desired_status(&conflicts, true);
    assert_eq!(status.conflict_count, 1);
    assert_eq!(status.conflicts, conflicts);
    assert_eq!(status.conditions[0].status, "True");
    assert!(
        status.conditions[0]
            .message
            .contains("clientId 6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b with pool other")
            && status.conditions[0].message.contains("denied until fixed"),
        "{}",
        status.conditions[0].message
    );
}
