use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::federation::{Credential, Identity};
use crate::policy::crd::Enforcement;

const ISS: &str = "https://issuer.example/";
const AUD: &str = "api://AzureADTokenExchange";
const CLIENT: &str = "aaaaaaaa-0000-0000-0000-000000000001";
const SUB: &str = "system:serviceaccount:ado-agents-linux:agent";

fn mutated_pod() -> Value {
    let env = json!([
        {"name": "AZURE_CLIENT_ID", "value": CLIENT},
        {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/tokens/azure-identity-token"},
    ]);
    let mount = json!([{"name": "azure-identity-token", "mountPath": "/var/run/secrets/azure/tokens", "readOnly": true}]);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent-1", "namespace": "ado-agents-linux",
                     "labels": {"azure.workload.identity/use": "true"}},
        "spec": {
            "serviceAccountName": "agent",
            "containers": [{"name": "agent", "image": "x", "env": env, "volumeMounts": mount}],
            "volumes": [{"name": "azure-identity-token", "projected": {"sources": [
                {"serviceAccountToken": {"audience": AUD, "expirationSeconds": 3600, "path": "azure-identity-token"}}]}}]
        }
    })
}

fn pools() -> Vec<Pool> {
    vec![Pool {
        name: "linux".into(),
        team: "platform".into(),
        client_id: CLIENT.into(),
        tenant_id: None,
        namespaces: vec!["ado-agents-linux".into()],
        service_accounts: vec!["agent".into()],
        enforcement: Enforcement::Enforce,
        created: String::new(),
        access: Default::default(),
    }]
}

fn credentials(subject: &str, issuer: &str, audience: &str) -> Credentials {
    Credentials {
        identities: vec![Identity {
            keys: vec!["/id/mi-linux".into()],
            name: "mi-linux".into(),
            client_id: Some(CLIENT.to_uppercase()),
            ..Default::default()
        }],
        credentials: vec![Credential {
            name: "agents".into(),
            identity: "/id/mi-linux".into(),
            issuer: issuer.into(),
            subject: subject.into(),
            audiences: vec![audience.into()],
            source: "test".into(),
        }],
    }
}

fn claims() -> Claims {
    Claims {
        iss: ISS.into(),
        sub: SUB.into(),
        aud: vec![AUD.into()],
        exp: Some(1_000_600),
    }
}

fn walk_with(pod: &Value, token: &Token, creds: Option<&Credentials>) -> Vec<Step> {
    let annotations: BTreeMap<String, String> = [(
        "azure.workload.identity/client-id".to_string(),
        CLIENT.to_string(),
    )]
    .into();
    walk(&Inputs {
        pod,
        namespace: "ado-agents-linux",
        service_account: Some(&annotations),
        pools: &pools(),
        pools_error: None,
        audience: AUD,
        volume_name: "azure-identity-token",
        tenant_id: "",
        issuer: Ok(ISS),
        token,
        credentials: creds,
        now: 1_000_000,
    })
}

fn step<'a>(steps: &'a [Step], name: &str) -> &'a Step {
    steps.iter().find(|s| s.name == name).unwrap()
}

#[test]
fn a_working_agent_passes_every_step() {
    let creds = credentials(SUB, ISS, AUD);
    let steps = walk_with(&mutated_pod(), &Token::Minted(claims()), Some(&creds));
    assert!(
        steps.iter().all(|s| s.status == Status::Pass),
        "{}",
        render(&steps)
    );
    assert_eq!(exit_code(&steps), 0);
    let names: Vec<_> = steps.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "label",
            "mutation",
            "serviceaccount",
            "pool",
            "issuer",
            "token",
            "credential"
        ]
    );
    let text = render(&steps);
    assert!(
        text.contains(&format!(
            "iss={ISS} sub={SUB} aud={AUD} exp 1000600 (in 600 s)"
        )),
        "{text}"
    );
    assert_eq!(text.lines().count(), steps.len());
}

#[test]
fn an_unlabelled_unmutated_pod_fails_with_the_fix() {
    let mut pod = mutated_pod();
    pod["metadata"]["labels"] = json!({});
    pod["spec"]["volumes"] = json!([]);
    pod["spec"]["containers"][0]["env"] = json!([]);
    let steps = walk_with(&pod, &Token::Minted(claims()), None);
    assert_eq!(exit_code(&steps), 1);
    let label = step(&steps, "label");
    assert_eq!(label.status, Status::Fail);
    assert!(
        label
            .fix
            .as_ref()
            .unwrap()
            .contains("azure.workload.identity/use")
    );
    let mutation = step(&steps, "mutation");
    assert_eq!(mutation.status, Status::Fail);
    assert!(
        mutation
            .detail
            .contains("projected token volume azure-identity-token"),
        "{}",
        mutation.detail
    );
    assert!(
        mutation
            .detail
            .contains("AZURE_FEDERATED_TOKEN_FILE in container agent")
    );
}

#[test]
fn a_refused_token_request_still_shows_the_claims_the_agent_carries() {
    let steps = walk_with(&mutated_pod(), &Token::Refused("forbidden".into()), None);
    let token = step(&steps, "token");
    assert_eq!(token.status, Status::Note);
    assert!(
        token.detail.contains("you may not mint a token"),
        "{}",
        token.detail
    );
    assert!(
        token
            .detail
            .contains(&format!("iss={ISS} sub={SUB} aud={AUD}")),
        "{}",
        token.detail
    );
    assert_eq!(exit_code(&steps), 0, "{}", render(&steps));
}

#[test]
fn each_credential_mismatch_names_its_field() {
    for (creds, field) in [
        (
            credentials("system:serviceaccount:ado-agents-linux-agent", ISS, AUD),
            "subject",
        ),
        (credentials(SUB, "https://issuer.example", AUD), "issuer"),
        (credentials(SUB, ISS, "api://other"), "audience"),
    ] {
        let steps = walk_with(&mutated_pod(), &Token::Minted(claims()), Some(&creds));
        let credential = step(&steps, "credential");
        assert_eq!(credential.status, Status::Fail, "{field}");
        assert!(
            credential.detail.contains(&format!("differs in {field} (")),
            "{field}: {}",
            credential.detail
        );
        assert_eq!(exit_code(&steps), 1);
    }
}

#[test]
fn an_identity_without_credentials_and_a_pool_violation_fail() {
    let mut creds = credentials(SUB, ISS, AUD);
    creds.credentials.clear();
    let mut pod = mutated_pod();
    pod["spec"]["serviceAccountName"] = "other".into();
    let steps = walk_with(&pod, &Token::Minted(claims()), Some(&creds));
    let credential = step(&steps, "credential");
    assert!(
        credential.detail.contains("has no federated credential"),
        "{}",
        credential.detail
    );
    let pool = step(&steps, "pool");
    assert_eq!(pool.status, Status::Fail);
    assert!(
        pool.detail.contains("[pool-service-account]"),
        "{}",
        pool.detail
    );
}

#[test]
fn the_injected_tenant_is_checked_only_against_a_given_tenant() {
    let mut pod = mutated_pod();
    pod["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "AZURE_TENANT_ID", "value": "00000000-0000-0000-0000-00000000000f"}));
    let annotations: BTreeMap<String, String> = [(
        "azure.workload.identity/client-id".to_string(),
        CLIENT.to_string(),
    )]
    .into();
    let token = Token::Minted(claims());
    let pool_step = |tenant: &str| {
        let steps = walk(&Inputs {
            pod: &pod,
            namespace: "ado-agents-linux",
            service_account: Some(&annotations),
            pools: &pools(),
            pools_error: None,
            audience: AUD,
            volume_name: "azure-identity-token",
            tenant_id: tenant,
            issuer: Ok(ISS),
            token: &token,
            credentials: None,
            now: 1_000_000,
        });
        step(&steps, "pool").clone()
    };
    let unknown = pool_step("");
    assert_eq!(unknown.status, Status::Pass);
    assert!(
        unknown.detail.contains("pass --tenant-id"),
        "{}",
        unknown.detail
    );
    let other = pool_step("00000000-0000-0000-0000-000000000001");
    assert_eq!(other.status, Status::Fail);
    assert!(
        other.detail.contains("[identity-env-override]"),
        "{}",
        other.detail
    );
    let same = pool_step("00000000-0000-0000-0000-00000000000f");
    assert_eq!(same.status, Status::Pass);
    assert!(!same.detail.contains("pass --tenant-id"), "{}", same.detail);
}
