//! Golden tests of `wi-webhook audit --credentials` (federated identity credentials against
//! the AgentPools): each folder of tests/credentials/ holds `pools.yaml`, a `credentials/`
//! directory in the formats platform teams have (`az ... -o json`, `terraform show -json` of a
//! plan or a state), the expected output in every format and the exit code. `WI_BLESS=1`
//! rewrites the expected files; read what it wrote before committing it.

mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use common::binary;
use wi_webhook::cli::audit::{AuditArgs, audit_files};

/// The service-account issuer of the cluster the fixtures were written for.
const ISSUER: &str = "https://westeurope.oic.prod-aks.azure.com/00000000-0000-0000-0000-000000000001/11111111-2222-3333-4444-555555555555/";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: AuditArgs,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/credentials")
}

fn check(path: &Path, actual: &str) {
    if std::env::var_os("WI_BLESS").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (WI_BLESS=1 writes it)", path.display()));
    assert!(
        expected == actual,
        "{} differs:\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

fn run(case: &Path, format: &str, extra: &[&str]) -> wi_webhook::cli::audit::Run {
    let pools = case.join("pools.yaml");
    let credentials = case.join("credentials");
    let mut argv = vec![
        "audit",
        "-f",
        pools.to_str().unwrap(),
        "--credentials",
        credentials.to_str().unwrap(),
        "-o",
        format,
    ];
    argv.extend_from_slice(extra);
    audit_files(&Cli::try_parse_from(argv).unwrap().args)
}

#[test]
fn credential_audits_match_the_golden_files() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 3, "no credential cases");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/");
    for case in cases {
        let mut code = None;
        for (format, file) in [
            ("table", "expected.table"),
            ("json", "expected.json"),
            ("policyreport", "expected-policyreport.yaml"),
        ] {
            let run = run(&case, format, &["--issuer", ISSUER]);
            check(&case.join(file), &run.stdout.replace(root, ""));
            if format == "table" {
                check(&case.join("expected.stderr"), &run.stderr.replace(root, ""));
            }
            assert!(code.is_none_or(|c| c == run.code), "{}", case.display());
            code = Some(run.code);
        }
        check(&case.join("expected-code"), &format!("{}\n", code.unwrap()));
    }
}

fn findings(case: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir().join(case).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_credential_rule_fires_on_its_fixture() {
    let found = findings("every-rule");
    for rule in wi_webhook::federation::rules::rule::ALL {
        assert!(
            found.iter().any(|f| f["rule"] == rule),
            "rule {rule} not found"
        );
    }
    // The win pool's identity (a Terraform state, in a child module, client id in another
    // case) trusts exactly its ServiceAccount: nothing about it.
    assert!(found.iter().all(|f| f["pool"] != "win"), "{found:?}");
    // mi-crowded trusts other clusters' ServiceAccounts: only Azure's limit concerns it here.
    let crowded: Vec<_> = found
        .iter()
        .filter(|f| f["name"].as_str().unwrap().starts_with("mi-crowded"))
        .collect();
    assert_eq!(crowded.len(), 1, "{crowded:?}");
    // mi-staging trusts the same namespace and ServiceAccount names under another cluster's
    // issuer: not this cluster's pool.
    assert!(
        found
            .iter()
            .all(|f| !f["name"].as_str().unwrap().starts_with("mi-staging")),
        "{found:?}"
    );
    assert_eq!(crowded[0]["rule"], "fic-too-many-credentials");
}

#[test]
fn the_setup_guides_terraform_is_flagged_with_the_corrected_subject() {
    let found = findings("terraform-plan-hyphen-subject");
    let subject = found
        .iter()
        .find(|f| f["rule"] == "fic-subject-format")
        .expect("fic-subject-format");
    let message = subject["message"].as_str().unwrap();
    assert!(
        message
            .contains("most likely means system:serviceaccount:ado-agents-linux:ado-agent-linux"),
        "{message}"
    );
    assert_eq!(subject["pool"], "linux");
    assert!(
        subject["source"]
            .as_str()
            .unwrap()
            .ends_with("azurerm_federated_identity_credential.identity")
    );
}

#[test]
fn a_clean_audit_exits_0_and_a_missing_issuer_exits_2() {
    let case = dir().join("az-clean");
    let run = run(&case, "table", &["--issuer", ISSUER]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The trailing slash is part of the issuer: without it every credential is wrong.
    let run = run_with(&case, ISSUER.trim_end_matches('/'));
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("fic-issuer"), "{}", run.stdout);
    let run = run_without_issuer(&case);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--issuer"), "{}", run.stderr);
}

fn run_with(case: &Path, issuer: &str) -> wi_webhook::cli::audit::Run {
    run(case, "table", &["--issuer", issuer])
}

fn run_without_issuer(case: &Path) -> wi_webhook::cli::audit::Run {
    run(case, "table", &[])
}

#[test]
fn unreadable_credentials_exit_2_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir().join("az-clean/pools.yaml"),
        tmp.path().join("pools.yaml"),
    )
    .unwrap();
    let creds = tmp.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("pods.json"), r#"{"kind": "Pod"}"#).unwrap();
    let run = run(tmp.path(), "table", &["--issuer", ISSUER]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("pods.json#1"), "{}", run.stderr);
    assert!(
        run.stderr.contains("az identity federated-credential list"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_terraform_plan_is_read_from_stdin_and_stdin_is_read_once() {
    let case = dir().join("terraform-plan-hyphen-subject");
    let plan = std::fs::read_to_string(case.join("credentials/plan.json")).unwrap();
    let pools = case.join("pools.yaml");
    let pools = pools.to_str().unwrap();
    let (stdout, stderr, code) = binary(
        &[
            "audit",
            "-f",
            pools,
            "--credentials",
            "-",
            "--issuer",
            ISSUER,
            "-o",
            "json",
        ],
        &plan,
    );
    assert_eq!(code, 1, "{stderr}");
    let found: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(found[0]["rule"], "fic-subject-format");
    assert!(
        found[0]["source"]
            .as_str()
            .unwrap()
            .starts_with("<stdin>#1 ")
    );
    let (_, stderr, code) = binary(
        &["audit", "-f", "-", "--credentials", "-", "--issuer", ISSUER],
        "",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot both read stdin"), "{stderr}");
}
