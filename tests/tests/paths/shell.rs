//! `pool-shell-access`: exec, attach and port-forward into a pool's pod, and the API
//! server's proxy to its pods and Services (which reaches the identity proxy sidecar).

use serde_json::json;
use wi_e2e::cluster;

use super::*;

#[tokio::test]
async fn shell_access_is_the_pool_teams_break_glass() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace(
            "shell",
            json!({"shell": [{"kind": "Group", "name": "shell-oncall"}]}),
            "Enforce",
        )
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "shell",
        json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/exec", "pods/attach", "pods/portforward"], "verbs": ["get", "create"]},
        ]),
        &["dev"],
        Some("shell-oncall"),
    )
    .await;
    let agents = pool.agents(&cluster, "agents", 1, json!({})).await.unwrap();
    let agent = agents[0].metadata.name.clone().unwrap();

    for verb in ["exec", "attach", "portforward"] {
        // A developer of the team, with RBAC for it: refused by the webhook.
        let err = connect(&cluster, "dev", &[], &ns, &agent, verb).await;
        assert!(
            err.contains(&denied_by("shell"))
                && err.contains("[pool-shell-access]")
                && err.contains("user dev"),
            "{verb} as dev: {err}"
        );
        // A cluster admin is not on the list either.
        let err = connect(&cluster, "root", &["system:masters"], &ns, &agent, verb).await;
        assert!(
            err.contains("[pool-shell-access]"),
            "{verb} as a cluster admin: {err}"
        );
        // The on-call group is: admitted, then no node to reach.
        let err = connect(&cluster, "alice", &["shell-oncall"], &ns, &agent, verb).await;
        assert!(
            err.contains(NO_HOST) && !err.contains("denied"),
            "{verb} as on-call: {err}"
        );
    }
    // What kubectl prints for the refusal.
    let out = cluster
        .kubectl_as(
            "dev",
            &[],
            &[
                "exec",
                "-n",
                &ns,
                &agent,
                "-c",
                "agent",
                "--",
                "cat",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ],
            "",
        )
        .await
        .unwrap();
    assert!(
        !out.success && out.stderr.contains("[pool-shell-access]"),
        "{}",
        out.stderr
    );

    // Every break-glass use is recorded: a metric, and an Event on the pool naming the user
    // and the pod.
    assert!(
        counted(
            &metrics(&cluster).await,
            "wi_webhook_pool_access_grants_total",
            &[("pool", &pool.pool), ("rule", "pool-shell-access")]
        ),
        "no grant metric"
    );
    let events = event_on(
        &cluster,
        &pool.pool,
        &[
            "BreakGlassAccess",
            "user alice",
            &format!("exec into pod {ns}/{agent}"),
        ],
    )
    .await;
    assert!(events.contains("spec.access.shell"), "{events}");

    // Warn: admitted (the warning goes with the upgrade's response); Audit: admitted and
    // counted.
    pool.set_enforcement(&cluster, "Warn").await;
    let err = connect(&cluster, "dev", &[], &ns, &agent, "exec").await;
    assert!(err.contains(NO_HOST), "exec as dev in Warn mode: {err}");
    pool.set_enforcement(&cluster, "Audit").await;
    let err = connect(&cluster, "dev", &[], &ns, &agent, "portforward").await;
    assert!(
        err.contains(NO_HOST),
        "port-forward as dev in Audit mode: {err}"
    );
    assert!(
        counted(
            &metrics(&cluster).await,
            "wi_webhook_pool_violations_total",
            &[
                ("pool", &pool.pool),
                ("rule", "pool-shell-access"),
                ("enforcement", "Audit")
            ]
        ),
        "no Audit violation counted"
    );
}

/// GET through the API server's proxy to `resource` `name` (port 8000, the identity proxy
/// sidecar's default) as `user`: the error kubectl prints. (kubectl, not kube-rs, whose
/// client retries the 503 of a Service without endpoints.)
async fn proxy(cluster: &Cluster, user: &str, ns: &str, resource: &str, name: &str) -> String {
    let url = format!(
        "/api/v1/namespaces/{ns}/{resource}/{name}:8000/proxy/metadata/identity/oauth2/token"
    );
    let out = cluster
        .kubectl_as(user, &[], &["get", "--raw", &url], "")
        .await
        .unwrap();
    assert!(
        !out.success,
        "proxy to {resource} {ns}/{name} as {user}: {}",
        out.stdout
    );
    out.stderr
}

#[tokio::test]
async fn the_api_servers_proxy_into_a_pool_is_break_glass_too() {
    let cluster = cluster().await;
    let pool = cluster
        .pool_namespace(
            "proxy",
            json!({"shell": [{"kind": "User", "name": "alice"}]}),
            "Enforce",
        )
        .await;
    let ns = pool.name().to_string();
    allow(
        &cluster,
        &pool,
        "proxy",
        json!([{"apiGroups": [""], "resources": ["pods/proxy", "services/proxy"], "verbs": ["get", "create"]}]),
        &["dev", "alice"],
        None,
    )
    .await;
    let agent = pool.agents(&cluster, "agents", 1, json!({})).await.unwrap()[0]
        .metadata
        .name
        .clone()
        .unwrap();
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "agents"},
        "spec": {"selector": {"app": "agents"}, "ports": [{"port": 8000}]}});
    cluster
        .apply_yaml(&ns, &serde_json::to_string(&service).unwrap())
        .await
        .unwrap();
    for (resource, name) in [("pods", agent.as_str()), ("services", "agents")] {
        let err = proxy(&cluster, "dev", &ns, resource, name).await;
        assert!(
            err.contains(&denied_by("shell")) && err.contains("[pool-shell-access]"),
            "{resource} proxy as dev: {err}"
        );
        // The listed user is admitted; the pod has no address to reach.
        let err = proxy(&cluster, "alice", &ns, resource, name).await;
        assert!(
            !err.contains("[pool-shell-access]") && !err.contains("denied the request"),
            "{resource} proxy as alice: {err}"
        );
    }
}
