//! `wi-webhook serve` refuses to start on a certificate it cannot serve, with a message
//! naming the file and the problem, before it touches the network (no cluster needed).

use std::path::Path;
use std::process::{Command, Output};

use wi_certs::{GenerateOptions, TLS_CERT_FILE, TLS_KEY_FILE, generate, write_file};

fn serve(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wi-webhook"));
    cmd.arg("serve")
        .args(["--tenant-id", "00000000-0000-0000-0000-000000000000"])
        // Nothing may be reached: a refusal must come before any connection.
        .args(["--kubeconfig", "/nonexistent/kubeconfig"])
        .args(["--listen", "127.0.0.1:1", "--metrics-listen", "127.0.0.1:1"])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("POD_NAMESPACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs the binary")
}

/// A fresh directory under the system temp dir (no tempfile dependency for four tests).
fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wi-serve-certs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files(dir: &Path) -> (String, String) {
    (
        dir.join(TLS_CERT_FILE).display().to_string(),
        dir.join(TLS_KEY_FILE).display().to_string(),
    )
}

fn opts() -> GenerateOptions {
    GenerateOptions {
        dns_names: vec!["localhost".into()],
        ..Default::default()
    }
}

#[track_caller]
fn refused(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
    assert!(
        !stderr.contains("kubeconfig"),
        "refused only after trying the network: {stderr}"
    );
}

#[test]
fn mismatched_pair_is_refused_naming_the_key_file() {
    let dir = tempdir("mismatch");
    let (a, b) = (generate(&opts()).unwrap(), generate(&opts()).unwrap());
    let (cert, key) = files(&dir);
    write_file(Path::new(&cert), &a.serving.cert, 0o644).unwrap();
    write_file(Path::new(&key), &b.serving.key, 0o600).unwrap();
    let out = serve(&["--tls-cert-file", &cert, "--tls-key-file", &key], &[]);
    refused(
        &out,
        &[
            "cannot serve with this certificate",
            &key,
            "private key does not match",
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expired_certificate_is_refused_with_its_date() {
    let dir = tempdir("expired");
    let old = generate(&GenerateOptions {
        not_before: wi_certs::time::OffsetDateTime::now_utc() - wi_certs::time::Duration::days(3),
        days: 1,
        ..opts()
    })
    .unwrap();
    old.write_dir(&dir).unwrap();
    let (cert, key) = files(&dir);
    let out = serve(&["--tls-cert-file", &cert, "--tls-key-file", &key], &[]);
    refused(&out, &[&cert, "expired at"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unreadable_files_are_refused() {
    let dir = tempdir("unreadable");
    let (cert, key) = files(&dir);
    let out = serve(&["--tls-cert-file", &cert, "--tls-key-file", &key], &[]);
    refused(&out, &[&cert, "unreadable"]);
    // A key file given as the certificate.
    generate(&opts()).unwrap().write_dir(&dir).unwrap();
    let out = serve(&["--tls-cert-file", &key, "--tls-key-file", &key], &[]);
    refused(&out, &[&key, "no certificate"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn self_managed_lifetimes_and_namespace_are_checked_before_the_network() {
    // From the environment, as the manifests set them.
    let out = serve(
        &[],
        &[
            ("WI_SELF_MANAGED_CERTS", "true"),
            ("POD_NAMESPACE", "wi-system"),
            ("WI_CERT_LIFETIME", "30s"),
            ("WI_CERT_RELOAD_INTERVAL", "10s"),
        ],
    );
    refused(&out, &["--cert-lifetime 30s is too short", "six"]);
    let out = serve(
        &[
            "--self-managed-certs",
            "--cert-namespace",
            "wi-system",
            "--cert-lifetime",
            "90d",
            "--ca-lifetime",
            "100d",
        ],
        &[],
    );
    refused(
        &out,
        &["--ca-lifetime 100d must be at least twice --cert-lifetime 90d"],
    );
    let out = serve(&["--self-managed-certs", "--cert-lifetime", "90"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("missing unit"),
        "{stderr}"
    );
    // No namespace at all (outside a pod): says how to give one.
    if !Path::new("/var/run/secrets/kubernetes.io/serviceaccount/namespace").exists() {
        let out = serve(&["--self-managed-certs"], &[]);
        refused(&out, &["--cert-namespace or POD_NAMESPACE"]);
    }
}
