//! `pool-shell-access`: exec, attach and port-forward into a pool's pod.

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
