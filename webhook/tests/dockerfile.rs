//! The Dockerfile kept buildable by review: no image is built here (no container runtime in
//! the test environment), so the facts a build depends on are checked against the repository
//! instead: every COPY source exists and is not excluded from the build context, the binary
//! is the workspace's, the builder's Rust is the toolchain's, the build is `--locked` and
//! cross-compiles for linux/amd64 and linux/arm64 from the build machine's platform, the base
//! images are pinned by digest, the OCI labels match the workspace, and the runtime image runs
//! as UID 65532 with the binary as its entrypoint.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// One instruction of the Dockerfile: keyword (upper case) and its arguments, continuation
/// lines joined, comments and the parser directive dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions() -> Vec<Instruction> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current
                    .split_once(char::is_whitespace)
                    .unwrap_or((&current, ""));
                out.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    args: args.split_whitespace().collect::<Vec<_>>().join(" "),
                });
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "Dockerfile ends in a continuation line");
    out
}

/// Instructions of the last stage (the image that ships).
fn final_stage(all: &[Instruction]) -> &[Instruction] {
    let last_from = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a FROM");
    &all[last_from..]
}

/// `name = "..."` of the `[[bin]]` table of webhook/Cargo.toml.
fn bin_name() -> String {
    let manifest = read("webhook/Cargo.toml");
    let bin = manifest
        .split("[[bin]]")
        .nth(1)
        .expect("webhook/Cargo.toml has a [[bin]]");
    let bin = bin.split("\n[").next().unwrap();
    quoted_value(bin, "name").expect("[[bin]] has a name")
}

/// The package name of webhook/Cargo.toml.
fn package_name() -> String {
    let manifest = read("webhook/Cargo.toml");
    let package = manifest.split("[package]").nth(1).expect("[package]");
    let package = package.split("\n[").next().unwrap();
    quoted_value(package, "name").expect("package name")
}

fn quoted_value(table: &str, key: &str) -> Option<String> {
    table.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
    })
}

/// major.minor of a version string such as `1.95`, `1.95.0` or `rustc 1.95.0 (...)`.
fn major_minor(version: &str) -> String {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    let minor: String = minor.chars().take_while(char::is_ascii_digit).collect();
    format!("{major}.{minor}")
}

#[test]
fn every_copy_source_exists_in_the_build_context() {
    let ignored = dockerignore();
    let mut copies = 0;
    for i in instructions()
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
    {
        assert_eq!(
            i.keyword, "COPY",
            "ADD fetches and unpacks: use COPY ({})",
            i.args
        );
        let words: Vec<&str> = i.args.split(' ').collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
        assert!(paths.len() >= 2, "COPY without a destination: {}", i.args);
        for source in &paths[..paths.len() - 1] {
            copies += 1;
            let path = repo().join(source);
            assert!(
                path.exists(),
                "COPY {source}: no such file or directory in the repository"
            );
            let normalized = source.trim_start_matches("./").trim_end_matches('/');
            assert!(
                !ignored.iter().any(|p| p == normalized),
                "COPY {source}: excluded by .dockerignore"
            );
        }
    }
    assert!(copies > 0, "the builder copies nothing");
}

/// Cargo loads every member of the workspace before it builds one package: a member the
/// builder does not copy fails the build.
#[test]
fn builder_copies_every_workspace_member() {
    let workspace = read("Cargo.toml");
    let members = workspace
        .lines()
        .find_map(|l| l.trim().strip_prefix("members"))
        .and_then(|rest| rest.split_once('['))
        .map(|(_, list)| list.split(']').next().unwrap().to_string())
        .expect("workspace members = [...] on one line");
    let copied: Vec<String> = instructions()
        .iter()
        .filter(|i| i.keyword == "COPY" && !i.args.contains("--from="))
        .flat_map(|i| {
            let words: Vec<String> = i
                .args
                .split(' ')
                .filter(|w| !w.starts_with("--"))
                .map(|w| w.trim_start_matches("./").trim_end_matches('/').to_string())
                .collect();
            words[..words.len().saturating_sub(1)].to_vec()
        })
        .collect();
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        assert!(
            copied
                .iter()
                .any(|c| c == "." || c == member || member.starts_with(&format!("{c}/"))),
            "workspace member {member} is not copied into the builder (COPY sources: {copied:?})"
        );
    }
    for file in ["Cargo.toml", "Cargo.lock"] {
        assert!(
            copied.iter().any(|c| c == file || c == "."),
            "{file} is not copied"
        );
    }
}

fn dockerignore() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_start_matches('/').trim_end_matches('/').to_string())
        .collect()
}

#[test]
fn dockerignore_keeps_build_output_and_cluster_state_out() {
    let ignored = dockerignore();
    for needed in ["target", ".cluster", ".git"] {
        assert!(
            ignored.iter().any(|p| p == needed),
            ".dockerignore does not exclude {needed}/ (has {ignored:?})"
        );
    }
}

#[test]
fn builder_uses_the_workspace_rust_and_a_locked_release_build() {
    let all = instructions();
    let builder = all.iter().find(|i| i.keyword == "FROM").expect("a FROM");
    let image = from_image(&builder.args);
    let tag = image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the builder is not the official rust image: {image}"));
    let builder_version = major_minor(tag.split('-').next().unwrap());

    // The workspace's declared Rust (Cargo.toml rust-version) ...
    let workspace = read("Cargo.toml");
    let declared = quoted_value(&workspace, "rust-version").expect("workspace rust-version");
    assert_eq!(
        builder_version,
        major_minor(&declared),
        "Dockerfile builder {image} vs workspace rust-version {declared}"
    );
    // ... and the toolchain these tests were built with.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .arg("--version")
        .output()
        .expect("rustc --version");
    let version = String::from_utf8_lossy(&out.stdout);
    let toolchain = major_minor(version.split_whitespace().nth(1).expect("rustc X.Y.Z"));
    assert_eq!(
        builder_version,
        toolchain,
        "Dockerfile builder {image} vs this toolchain ({})",
        version.trim()
    );

    let package = package_name();
    let run = all
        .iter()
        .filter(|i| i.keyword == "RUN")
        .find(|i| i.args.contains("cargo build"))
        .expect("a RUN cargo build");
    for flag in ["--release", "--locked", &format!("-p {package}")] {
        assert!(
            run.args.contains(flag),
            "cargo build without {flag}: {}",
            run.args
        );
    }
}

#[test]
fn runtime_image_is_distroless_nonroot_with_the_binary_as_entrypoint() {
    let all = instructions();
    let runtime = final_stage(&all);
    let from = from_image(&runtime[0].args);
    assert!(
        from.starts_with("gcr.io/distroless/") && from.contains(":nonroot"),
        "runtime image {from}: distroless, nonroot tag"
    );
    let user = runtime
        .iter()
        .rev()
        .find(|i| i.keyword == "USER")
        .expect("USER in the runtime stage");
    assert_eq!(
        user.args.split(':').next(),
        Some("65532"),
        "USER {}",
        user.args
    );

    let bin = bin_name();
    let copy = runtime
        .iter()
        .find(|i| i.keyword == "COPY" && i.args.contains("--from="))
        .expect("the runtime copies the binary from the builder");
    let words: Vec<&str> = copy.args.split(' ').collect();
    let (source, dest) = (words[words.len() - 2], words[words.len() - 1]);
    assert!(
        source.ends_with(&format!("/{bin}")),
        "copies {source}, the binary is {bin}"
    );
    // The builder's RUN puts target/release/<bin> where the runtime copies it from.
    let builder_run = all
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .unwrap();
    assert!(
        builder_run
            .args
            .contains(&format!("\"target/$rust_target/release/{bin}\" {source}")),
        "the builder does not put target/$rust_target/release/{bin} at {source}: {}",
        builder_run.args
    );

    let entrypoint = runtime
        .iter()
        .rev()
        .find(|i| i.keyword == "ENTRYPOINT")
        .expect("ENTRYPOINT");
    let exec: Vec<String> =
        serde_json::from_str(&entrypoint.args).expect("ENTRYPOINT in exec (JSON) form: no shell");
    assert_eq!(exec.len(), 1, "ENTRYPOINT {exec:?}");
    let entry = &exec[0];
    let copied_to = if dest.ends_with('/') {
        format!("{dest}{bin}")
    } else {
        dest.to_string()
    };
    assert_eq!(entry, &copied_to, "ENTRYPOINT is not the copied binary");
    // No shell in the image: nothing may need one.
    if let Some(run) = runtime.iter().find(|i| i.keyword == "RUN") {
        panic!("RUN in the runtime stage needs a shell: {}", run.args);
    }
}

/// The image of a FROM instruction, without `--platform=` and `AS name`.
fn from_image(args: &str) -> &str {
    args.split(' ')
        .find(|w| !w.starts_with("--"))
        .expect("FROM names an image")
}

#[test]
fn every_base_image_is_pinned_by_digest() {
    let all = instructions();
    let froms: Vec<&Instruction> = all.iter().filter(|i| i.keyword == "FROM").collect();
    assert!(froms.len() >= 2, "a builder and a runtime stage");
    for from in froms {
        let image = from_image(&from.args);
        let (name, digest) = image
            .split_once("@sha256:")
            .unwrap_or_else(|| panic!("FROM {image}: not pinned by digest (@sha256:...)"));
        assert!(
            name.contains(':'),
            "FROM {image}: keep the tag next to the digest"
        );
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "FROM {image}: a digest is 64 hex digits"
        );
    }
}

#[test]
fn builder_cross_compiles_for_amd64_and_arm64_on_the_build_platform() {
    let all = instructions();
    let builder = all.iter().find(|i| i.keyword == "FROM").unwrap();
    assert!(
        builder.args.starts_with("--platform=$BUILDPLATFORM "),
        "the builder runs on the build machine's platform: FROM {}",
        builder.args
    );
    let text = read("Dockerfile");
    for (arch, target, cross) in [
        ("amd64", "x86_64-unknown-linux-gnu", "gcc-x86-64-linux-gnu"),
        (
            "arm64",
            "aarch64-unknown-linux-gnu",
            "gcc-aarch64-linux-gnu",
        ),
    ] {
        let case = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{arch})")))
            .unwrap_or_else(|| panic!("no case for {arch}"));
        assert!(
            case.contains(target) && case.contains(cross),
            "{arch}: {case}"
        );
    }
    let build = all
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .unwrap();
    for needed in ["--target \"$rust_target\"", "_LINKER=$cc", "CC_"] {
        assert!(
            build.args.contains(needed),
            "cargo build without {needed}: {}",
            build.args
        );
    }
}

#[test]
fn oci_labels_match_the_workspace() {
    let all = instructions();
    let runtime = final_stage(&all);
    let labels: String = runtime
        .iter()
        .filter(|i| i.keyword == "LABEL")
        .map(|i| i.args.clone())
        .collect::<Vec<_>>()
        .join(" ");
    let workspace = read("Cargo.toml");
    let version = quoted_value(&workspace, "version").expect("workspace version");
    let license = quoted_value(&workspace, "license").expect("workspace license");
    for key in [
        "title",
        "description",
        "version",
        "revision",
        "created",
        "licenses",
    ] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "no org.opencontainers.image.{key} label: {labels}"
        );
    }
    assert!(
        labels.contains(&format!("org.opencontainers.image.licenses=\"{license}\"")),
        "licenses label is not the workspace's {license}: {labels}"
    );
    let version_arg = runtime
        .iter()
        .find(|i| i.keyword == "ARG" && i.args.starts_with("WI_VERSION="))
        .expect("ARG WI_VERSION in the runtime stage");
    assert_eq!(
        version_arg.args,
        format!("WI_VERSION={version}"),
        "image version vs the workspace's"
    );
    assert!(labels.contains("org.opencontainers.image.version=\"$WI_VERSION\""));
    // The commit reaches the binary (--version) and the label from one build argument.
    let build = all
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .unwrap();
    assert!(
        build.args.contains("WI_GIT_COMMIT=$WI_GIT_COMMIT"),
        "{}",
        build.args
    );
    assert!(labels.contains("org.opencontainers.image.revision=\"$WI_GIT_COMMIT\""));
}
