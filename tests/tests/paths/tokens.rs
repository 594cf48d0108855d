//! `pool-token-request`: TokenRequest for a pool's ServiceAccount.

use std::time::Duration;

use serde_json::json;
use wi_e2e::agentpools::AGENT_SA;
use wi_e2e::{cluster, poll};

use super::*;

#[tokio::test]
async fn only_kubelets_and_listed_subjects_get_a_pool_token() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace(
            "tokens",
            json!({"tokenRequesters": [{"kind": "User", "name": "minter"}]}),
            "Enforce",
        )
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "tokens",
        json!([{"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]}]),
        &["dev", "minter"],
        None,
    )
    .await;
    let token = |user: &'static str, groups: &'static [&'static str], sa: &'static str| {
        let (cluster, ns) = (&cluster, ns.clone());
        async move {
            cluster
                .kubectl_as(user, groups, &["create", "token", sa, "-n", &ns], "")
                .await
                .unwrap()
        }
    };

    let out = token("dev", &[], AGENT_SA).await;
    assert!(
        !out.success
            && out.stderr.contains(&denied_by("token-requests"))
            && out.stderr.contains("[pool-token-request]"),
        "{}",
        out.stderr
    );
    let out = token("admin", &["system:masters"], AGENT_SA).await;
    assert!(
        !out.success && out.stderr.contains("[pool-token-request]"),
        "cluster admin: {}",
        out.stderr
    );
    // A ServiceAccount of the namespace that is not the pool's: not this rule's.
    let out = token("dev", &[], "not-the-pools").await;
    assert!(out.success, "{}", out.stderr);
    // The listed requester, recorded.
    let out = token("minter", &[], AGENT_SA).await;
    assert!(
        out.success && out.stdout.starts_with("ey"),
        "{}",
        out.stderr
    );
    event_on(
        &cluster,
        &pool.pool,
        &[
            "BreakGlassAccess",
            "user minter",
            &format!("ServiceAccount {ns}/{AGENT_SA}"),
        ],
    )
    .await;

    // The kubelet of a node that runs one of the pool's pods: the Node authorizer lets it
    // mint tokens for that pod's ServiceAccount, and so does the webhook.
    pool.agents(&cluster, "on-n1", 1, json!({"nodeName": "n1"}))
        .await
        .unwrap();
    let out = poll(
        "a token for the kubelet of n1",
        Duration::from_secs(20),
        || async {
            let out = token("system:node:n1", &["system:nodes"], AGENT_SA).await;
            assert!(
                !out.stderr.contains("[pool-token-request]"),
                "{}",
                out.stderr
            );
            Ok(out.success.then_some(out))
        },
    )
    .await
    .unwrap();
    assert!(out.stdout.starts_with("ey"), "{}", out.stdout);
    // The kubelet of another node is stopped before admission, by the Node authorizer.
    let out = token("system:node:n2", &["system:nodes"], AGENT_SA).await;
    assert!(
        !out.success
            && out.stderr.contains("forbidden")
            && !out.stderr.contains("[pool-token-request]"),
        "{}",
        out.stderr
    );

    // Audit: the developer gets the token, and the request is counted.
    pool.set_enforcement(&cluster, "Audit").await;
    let out = token("dev", &[], AGENT_SA).await;
    assert!(out.success, "{}", out.stderr);
    assert!(
        counted(
            &metrics(&cluster).await,
            "wi_webhook_pool_violations_total",
            &[
                ("pool", &pool.pool),
                ("rule", "pool-token-request"),
                ("enforcement", "Audit")
            ]
        ),
        "no Audit violation counted"
    );
}
