//! The command line as users and CI meet it, through the built binary: exit codes (0 ok,
//! 1 findings, 2 unusable input, 64 usage), `--version`, completions, the log levels, and
//! the upstream webhook's flags, accepted or refused with a message. No cluster: `serve`
//! is only run where it must refuse before touching the network.

use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wi-webhook"))
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("WI_LOG_LEVEL")
        .env_remove("POD_NAMESPACE")
        .output()
        .expect("runs the binary")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `serve` with what it needs to get as far as its checks, and nothing reachable.
fn serve(args: &[&str]) -> Output {
    let mut all = vec![
        "serve",
        "--tenant-id",
        "00000000-0000-0000-0000-000000000000",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--listen",
        "127.0.0.1:1",
    ];
    all.extend_from_slice(args);
    run(&all)
}

#[track_caller]
fn usage_error(out: &Output, needle: &str) {
    assert_eq!(code(out), 64, "not a usage error: {}", stderr(out));
    assert!(
        stderr(out).contains(needle),
        "no {needle:?} in: {}",
        stderr(out)
    );
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let out = run(&["--version"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    let expected = format!("wi-webhook {} (", env!("CARGO_PKG_VERSION"));
    assert!(text.starts_with(&expected), "{text}");
    let commit = text
        .trim()
        .rsplit_once('(')
        .unwrap()
        .1
        .trim_end_matches(')');
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        // Built from a checkout: its commit (the build script reruns when HEAD moves).
        Some(head) if std::env::var("WI_GIT_COMMIT").is_err() => assert_eq!(commit, head),
        _ => assert!(!commit.is_empty(), "{text}"),
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let out = run(&["--help"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "Exit codes:",
        "1   audit",
        "2   unusable input",
        "64  usage error",
    ] {
        assert!(text.contains(line), "no {line:?} in --help: {text}");
    }
}

#[test]
fn usage_errors_exit_64() {
    usage_error(&run(&["no-such-command"]), "unrecognized subcommand");
    usage_error(&run(&["crd", "--no-such-flag"]), "--no-such-flag");
    usage_error(&run(&[]), "Usage");
    usage_error(
        &run(&["mutate", "-f", "x.yaml", "--native-sidecar", "sometimes"]),
        "sometimes",
    );
}

#[test]
fn unknown_log_levels_are_refused_not_read_as_info() {
    usage_error(
        &run(&["--log-level", "verbose", "crd"]),
        "unknown log level",
    );
    usage_error(&run(&["--log-level", "x=loud", "crd"]), "unknown log level");
    let env = Command::new(env!("CARGO_BIN_EXE_wi-webhook"))
        .arg("crd")
        .env("WI_LOG_LEVEL", "chatty")
        .output()
        .unwrap();
    usage_error(&env, "unknown log level");
    // Ours, upstream's (an empty level, `all`), Go's single dash, and directives.
    for ok in [
        vec!["--log-level", "debug", "crd"],
        vec!["--log-level=", "crd"],
        vec!["-log-level=all", "crd"],
        vec!["--log-level", "info,wi_webhook=trace", "crd"],
    ] {
        let out = run(&ok);
        assert_eq!(code(&out), 0, "{ok:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("kind: CustomResourceDefinition"));
    }
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F _wi__webhook"),
        ("zsh", "#compdef wi-webhook"),
        ("fish", "complete -c wi-webhook"),
    ] {
        let out = run(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        // The subcommands and the upstream aliases complete too.
        assert!(script.contains("webhook-config") && script.contains("health-addr"));
    }
    usage_error(&run(&["completions", "cmd.exe"]), "cmd.exe");
}

#[test]
fn unusable_input_exits_2_and_findings_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let out = run(&["audit", "-f", missing.to_str().unwrap()]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.yaml"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Pod\nmetadata: [unclosed\n").unwrap();
    for command in ["audit", "mutate"] {
        let out = run(&[command, "-f", bad.to_str().unwrap(), "--tenant-id", "t"]);
        assert_eq!(code(&out), 2, "{command}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("bad.yaml:"), "{command}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }

    // A pool violation: audit exits 1.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let case = repo.join("tests/audit/every-rule/input.yaml");
    let out = run(&["audit", "-f", case.to_str().unwrap(), "--tenant-id", "t"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
}

#[test]
fn a_missing_certificate_is_reported_once() {
    let out = serve(&[
        "--tls-cert-file",
        "/nope/tls.crt",
        "--tls-key-file",
        "/nope/tls.key",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.matches("/nope/tls.crt").count(), 1, "{err}");
    assert!(
        !err.contains("kubeconfig"),
        "refused before the network: {err}"
    );
}

#[test]
fn upstream_cert_flags() {
    // --webhook-cert-dir is the directory of tls.crt and tls.key.
    let out = serve(&["--webhook-cert-dir", "/nope-certs"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nope-certs/tls.crt"),
        "{}",
        stderr(&out)
    );
    // --disable-cert-rotation is file mode, Go's bool syntax included.
    for flag in [
        "--disable-cert-rotation",
        "--disable-cert-rotation=true",
        "-disable-cert-rotation",
    ] {
        let out = serve(&[flag, "--webhook-cert-dir", "/nope-certs"]);
        assert_eq!(code(&out), 2, "{flag}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("/nope-certs/tls.crt"),
            "{flag}: {}",
            stderr(&out)
        );
    }
    usage_error(
        &serve(&["--disable-cert-rotation", "--self-managed-certs"]),
        "--self-managed-certs",
    );
    usage_error(
        &serve(&["--webhook-cert-dir", "/a", "--tls-cert-file", "/b/tls.crt"]),
        "--tls-cert-file",
    );
}

#[test]
fn upstream_metrics_flags_and_refused_flags() {
    usage_error(
        &serve(&["--metrics-backend", "opencensus"]),
        "only prometheus",
    );
    usage_error(&serve(&["--health-addr", "9440"]), ":PORT");
    usage_error(&serve(&["--metrics-addr", "nowhere"]), ":PORT");
    for flag in [
        "--custom-token-endpoint-audience",
        "--custom-token-endpoint-annotation-suffix",
    ] {
        let out = serve(&[flag, "x"]);
        usage_error(&out, "not supported");
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
    }
    // Accepted: they get as far as the certificate check.
    let out = serve(&[
        "--metrics-backend",
        "Prometheus",
        "--metrics-addr",
        ":18095",
        "--health-addr",
        ":19440",
        "--webhook-cert-dir",
        "/nope-certs",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nope-certs/tls.crt"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn token_layout_upstream_refuses_its_own_flags_being_set() {
    let out = run(&[
        "mutate",
        "-f",
        "-",
        "--tenant-id",
        "t",
        "--token-layout",
        "upstream",
        "--token-mount-path",
        "/elsewhere",
    ]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--token-layout upstream"),
        "{}",
        stderr(&out)
    );
}
