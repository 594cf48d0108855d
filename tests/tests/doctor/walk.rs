//! doctor on an agent of no pool: a working one, each kind of credential mismatch, a user
//! who may not mint the token.

use wi_e2e::{cluster, pods};

use super::{agent, published_issuer, run, unique_client, write_credentials};

#[tokio::test]
async fn doctor_walks_a_working_agent_and_names_each_credential_mismatch() {
    let cluster = cluster().await;
    let ns = cluster.namespace("doctor").await;
    let n = ns.name.clone();
    let client = unique_client(1);
    agent(&cluster, &n, &client).await;
    let issuer = published_issuer(&cluster).await;
    let subject = format!("system:serviceaccount:{n}:agent");
    let tmp = tempfile::tempdir().unwrap();

    let good = tmp.path().join("good");
    write_credentials(
        &good,
        &client.to_uppercase(),
        &issuer,
        &subject,
        pods::AUDIENCE,
    );
    let (stdout, stderr, code) = run(
        &cluster.kubeconfig,
        &[
            "doctor",
            "agent-0",
            "-n",
            &n,
            "--credentials",
            good.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    for (line, step) in lines.iter().zip([
        "label",
        "mutation",
        "serviceaccount",
        "pool",
        "issuer",
        "token",
        "credential",
    ]) {
        assert!(
            line.starts_with("ok") || (step == "pool" && line.starts_with("note")),
            "{line}"
        );
        assert!(line.contains(step), "{line}");
    }
    // The minted token's claims, decoded.
    let token = lines[5];
    for claim in [
        format!("iss={issuer} "),
        format!("sub={subject} "),
        format!("aud={} ", pods::AUDIENCE),
    ] {
        assert!(token.contains(&claim), "{token}");
    }
    assert!(
        token.contains("(in 600 s)") || token.contains("(in 599 s)"),
        "{token}"
    );

    let cases = [
        (
            "subject",
            issuer.clone(),
            format!("system:serviceaccount:{n}-agent"),
            pods::AUDIENCE,
        ),
        (
            "issuer",
            format!("{issuer}/"),
            subject.clone(),
            pods::AUDIENCE,
        ),
        ("audience", issuer.clone(), subject.clone(), "api://other"),
    ];
    for (field, iss, sub, aud) in cases {
        let dir = tmp.path().join(field);
        write_credentials(&dir, &client, &iss, &sub, aud);
        let (stdout, stderr, code) = run(
            &cluster.kubeconfig,
            &[
                "doctor",
                "agent-0",
                "-n",
                &n,
                "--credentials",
                dir.to_str().unwrap(),
            ],
        )
        .await;
        assert_eq!(code, 1, "{field}: {stdout}\n{stderr}");
        let line = stdout.lines().last().unwrap();
        assert!(line.starts_with("FAIL  credential"), "{field}: {line}");
        assert!(
            line.contains(&format!("differs in {field} (")),
            "{field}: {line}"
        );
        assert!(line.contains("fix: "), "{line}");
    }

    // Unusable input: no such pod.
    let (_, stderr, code) = run(&cluster.kubeconfig, &["doctor", "no-such-pod", "-n", &n]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    ns.delete().await.unwrap();
}

#[tokio::test]
async fn a_user_who_may_not_mint_the_token_still_sees_its_claims() {
    let cluster = cluster().await;
    let ns = cluster.namespace("doctor-ro").await;
    let n = ns.name.clone();
    let client = unique_client(2);
    agent(&cluster, &n, &client).await;
    let issuer = published_issuer(&cluster).await;
    // A reader of pods and ServiceAccounts, without create on serviceaccounts/token.
    cluster
        .apply_yaml(
            &n,
            r#"apiVersion: v1
kind: ServiceAccount
metadata: {name: reader}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader}
rules:
- apiGroups: [""]
  resources: [pods, serviceaccounts]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- kind: ServiceAccount
  name: reader
"#,
        )
        .await
        .unwrap();
    let subject = format!("system:serviceaccount:{n}:agent");
    let tmp = tempfile::tempdir().unwrap();
    write_credentials(tmp.path(), &client, &issuer, &subject, pods::AUDIENCE);
    let reader = format!("system:serviceaccount:{n}:reader");
    let (stdout, stderr, code) = run(
        &cluster.kubeconfig,
        &[
            "doctor",
            "agent-0",
            "-n",
            &n,
            "--as",
            &reader,
            "--credentials",
            tmp.path().to_str().unwrap(),
        ],
    )
    .await;
    let step = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_default()
            .to_string()
    };
    let token = step("token");
    assert!(token.starts_with("note"), "{stdout}\n{stderr}");
    assert!(token.contains("you may not mint a token"), "{token}");
    assert!(
        token.contains("forbidden"),
        "the API server's answer: {token}"
    );
    assert!(
        token.contains(&format!(
            "iss={issuer} sub={subject} aud={}",
            pods::AUDIENCE
        )),
        "{token}"
    );
    // The reader cannot list AgentPools either: said, not a failure.
    let pool = step("pool");
    assert!(pool.starts_with("note"), "{pool}");
    assert!(pool.contains("cannot read the AgentPools"), "{pool}");
    // The credential is matched against the claims from the discovery document and the pod.
    let credential = stdout.lines().last().unwrap();
    assert!(credential.starts_with("ok    credential"), "{stdout}");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    ns.delete().await.unwrap();
}
