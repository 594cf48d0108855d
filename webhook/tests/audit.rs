//! Golden tests of `wi-webhook audit` over manifests: each folder of tests/audit/ holds an
//! `input.yaml` and the expected output in every format (`expected.table`, `expected.json`,
//! `expected-policyreport.yaml`) and exit code (`expected-code`). `WI_BLESS=1` rewrites the
//! expected files; read what it wrote before committing it.
//!
//! Also through the binary: input on stdin (`-f -`, as `kustomize build | wi-webhook audit`)
//! and unreadable input (exit 2, file and line named).

mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use common::binary;
use wi_webhook::cli::audit::{AuditArgs, audit_files};

const TENANT: &str = "00000000-0000-0000-0000-000000000001";

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: AuditArgs,
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/audit");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "no audit cases in {}", dir.display());
    cases
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

#[test]
fn audit_outputs_match_the_golden_files() {
    for case in cases() {
        let input = case.join("input.yaml");
        let mut code = None;
        for (format, file) in [
            ("table", "expected.table"),
            ("json", "expected.json"),
            ("policyreport", "expected-policyreport.yaml"),
        ] {
            let cli = Cli::try_parse_from([
                "audit",
                "-f",
                input.to_str().unwrap(),
                "-o",
                format,
                "--tenant-id",
                TENANT,
            ])
            .unwrap();
            let run = audit_files(&cli.args);
            // Paths relative to the repository, so the files do not depend on the checkout.
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/");
            check(&case.join(file), &run.stdout.replace(root, ""));
            assert!(
                code.is_none_or(|c| c == run.code),
                "{}: exit codes differ by format",
                case.display()
            );
            code = Some(run.code);
        }
        check(&case.join("expected-code"), &format!("{}\n", code.unwrap()));
    }
}

#[test]
fn the_every_rule_case_reports_every_rule_whatever_the_enforcement() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/audit/every-rule/expected.json"),
    )
    .unwrap();
    let findings: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    use wi_webhook::policy::rules::rule;
    for rule in rule::ALL
        .into_iter()
        .filter(|r| !rule::REQUEST_ONLY.contains(r))
    {
        assert!(
            findings.iter().any(|f| f["rule"] == rule),
            "rule {rule} not found by the audit"
        );
    }
    for mode in ["Audit", "Warn", "Enforce"] {
        assert!(
            findings.iter().any(|f| f["enforcement"] == mode),
            "no {mode} finding"
        );
    }
}

#[test]
fn stdin_is_read_like_kustomize_output() {
    let input = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/audit/every-rule/input.yaml"),
    )
    .unwrap();
    let (stdout, stderr, code) = binary(
        &["audit", "-f", "-", "-o", "json", "--tenant-id", TENANT],
        &input,
    );
    assert_eq!(code, 1, "{stderr}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert!(
        findings
            .iter()
            .all(|f| f["source"].as_str().unwrap().starts_with("<stdin>#"))
    );
    assert!(stderr.contains("pool violation(s)"), "{stderr}");
}

#[test]
fn unreadable_input_exits_2_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, "kind: Pod\nmetadata:\n  name: [unclosed\n").unwrap();
    let (stdout, stderr, code) = binary(&["audit", "-f", file.to_str().unwrap()], "");
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains(&format!("{}:", file.display())), "{stderr}");
    let (_, stderr, code) = binary(&["audit", "-f", "/no/such/file.yaml"], "");
    assert_eq!(code, 2);
    assert!(stderr.contains("/no/such/file.yaml"), "{stderr}");
}

#[test]
fn two_agent_pools_of_one_name_are_unreadable_input_naming_both_documents() {
    let dir = tempfile::tempdir().unwrap();
    let pool = |team: &str| {
        format!(
            "apiVersion: wi-webhook.dev/v1alpha1\nkind: AgentPool\nmetadata: {{name: pool-a}}\n\
             spec: {{team: {team}, identity: {{clientId: aaaaaaaa-0000-0000-0000-000000000001}}, \
             namespaces: [ado-a], serviceAccounts: [agent]}}\n"
        )
    };
    let first = dir.path().join("pools.yaml");
    std::fs::write(&first, format!("{}---\n{}", pool("team-a"), pool("team-b"))).unwrap();
    let (stdout, stderr, code) = binary(
        &[
            "audit",
            "-f",
            first.to_str().unwrap(),
            "--tenant-id",
            TENANT,
        ],
        "",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let name = first.display();
    assert!(
        stderr.contains("AgentPool pool-a is defined twice")
            && stderr.contains(&format!("{name}#1"))
            && stderr.contains(&format!("{name}#2")),
        "{stderr}"
    );
    // Across files too: `wi-webhook mutate` reads the same state.
    let second = dir.path().join("more-pools.yaml");
    std::fs::write(&second, pool("team-b")).unwrap();
    std::fs::write(&first, pool("team-a")).unwrap();
    let (_, stderr, code) = binary(
        &[
            "mutate",
            "-f",
            first.to_str().unwrap(),
            "-f",
            second.to_str().unwrap(),
            "--tenant-id",
            TENANT,
        ],
        "",
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("{}#1", first.display()))
            && stderr.contains(&format!("{}#1", second.display())),
        "{stderr}"
    );
}

#[test]
fn without_the_webhooks_tenant_the_audit_refuses_to_guess() {
    let input = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/audit/clean/input.yaml"),
    )
    .unwrap();
    for args in [&["audit", "-f", "-"][..], &["audit", "--cluster"][..]] {
        let (stdout, stderr, code) = binary(args, &input);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert!(
            stderr.contains("--tenant-id") && stderr.contains("AZURE_TENANT_ID"),
            "{args:?}: {stderr}"
        );
    }
}
