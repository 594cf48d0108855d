//! Golden tests of `wi-webhook mutate`: one folder per case under `tests/golden/`.
//!
//! A case folder holds:
//! - `input.yaml`: Pods and workloads plus the ServiceAccounts and AgentPools they use (the
//!   cluster state); or instead `inputs`: repo-relative paths, one a line (so the seed manifest
//!   exists once, in `examples/`);
//! - `args` (optional): extra `wi-webhook mutate` flags, whitespace-separated. They come after
//!   the default flags (`--tenant-id 00000000-0000-0000-0000-000000000001`) and override them;
//! - the expected result: `expected.yaml` (exact stdout of `mutate -o yaml`; absent means
//!   empty stdout), `expected-stderr.txt` (absent means empty stderr) and `expected-code`
//!   (exit code; absent means 0).
//!
//! Paths in the output are shown relative to the repository root, so expected files do not
//! depend on where the repository is checked out.
//!
//! Every case that exits 0 is also checked for idempotence: its own output, fed
//! back with the same ServiceAccounts, AgentPools and flags, must give an empty patch for every
//! object.
//!
//! `WI_BLESS=1 cargo test -p wi-webhook --test golden` rewrites the expected files from the
//! actual output. Read every file it writes and check it against the documented behaviour by hand before
//! committing: a blessed file only records what the code does, not what it should do.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser};
use serde_json::Value;
use wi_webhook::cli::mutate::{MutateArgs, Run, execute};

const DEFAULT_ARGS: &[&str] = &["--tenant-id", "00000000-0000-0000-0000-000000000001"];

/// The `mutate` flags as the binary parses them. Later flags override earlier ones, so a case's
/// `args` can replace a default.
#[derive(Parser, Debug)]
#[command(name = "wi-webhook-mutate", args_override_self = true)]
struct T {
    #[command(flatten)]
    a: MutateArgs,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the webhook crate sits in the workspace")
        .to_path_buf()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read_opt(path: &Path) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// The input files of a case: `input.yaml`, or the paths listed in `inputs`.
fn inputs(case: &Path) -> Vec<PathBuf> {
    let listed = read_opt(&case.join("inputs"));
    let input = case.join("input.yaml");
    match listed {
        Some(list) => {
            assert!(
                !input.exists(),
                "{}: has both inputs and input.yaml",
                case.display()
            );
            let files: Vec<PathBuf> = list
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| repo_root().join(l))
                .collect();
            assert!(
                !files.is_empty(),
                "{}: inputs lists no file",
                case.display()
            );
            files
        }
        None => {
            assert!(
                input.exists(),
                "{}: no input.yaml nor inputs",
                case.display()
            );
            vec![input]
        }
    }
}

fn parse_args(files: &[PathBuf], extra: &[String], output: &str) -> MutateArgs {
    let mut argv: Vec<String> = vec!["wi-webhook-mutate".into(), "-o".into(), output.into()];
    for f in files {
        argv.push("-f".into());
        argv.push(f.display().to_string());
    }
    argv.extend(DEFAULT_ARGS.iter().map(|s| s.to_string()));
    argv.extend(extra.iter().cloned());
    // Every flag can also come from an env var; a developer's shell (AZURE_TENANT_ID,
    // WI_NATIVE_SIDECAR, ...) must not change the results, so the env is not read here.
    let command = T::command().mut_args(|a| a.env(None::<&str>));
    match command
        .try_get_matches_from(&argv)
        .and_then(|m| T::from_arg_matches(&m))
    {
        Ok(t) => t.a,
        Err(e) => panic!("cannot parse {argv:?}: {e}"),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Output with the repository's absolute path removed.
fn normalise(s: &str) -> String {
    let root = format!("{}/", repo_root().display());
    s.replace(&root, "")
}

/// A line diff (longest common subsequence), `-` expected, `+` actual, with some context.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut lines: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            lines.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            lines.push(('-', a[i]));
            i += 1;
        } else {
            lines.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..lines.len()).filter(|&k| lines[k].0 != ' ').collect();
    let mut out = String::from("(- expected, + actual)\n");
    let mut last_shown: Option<usize> = None;
    for (k, (tag, line)) in lines.iter().enumerate() {
        let near = changed
            .iter()
            .any(|&c| k + CONTEXT >= c && k <= c + CONTEXT);
        if !near {
            continue;
        }
        if last_shown.is_some_and(|l| l + 1 != k) || (last_shown.is_none() && k > 0) {
            out.push_str("   ...\n");
        }
        let _ = writeln!(out, "{tag}  {line}");
        last_shown = Some(k);
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("(the final newline differs)\n");
    }
    out
}

struct Expected {
    stdout: String,
    stderr: String,
    code: u8,
}

fn expected(case: &Path) -> Expected {
    let code = read_opt(&case.join("expected-code")).map_or(0, |c| {
        c.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}/expected-code: {e}", case.display()))
    });
    Expected {
        stdout: read_opt(&case.join("expected.yaml")).unwrap_or_default(),
        stderr: read_opt(&case.join("expected-stderr.txt")).unwrap_or_default(),
        code,
    }
}

/// Writes `contents` to `path`, or removes the file when there is nothing to expect.
fn bless_file(path: &Path, contents: Option<&str>) {
    match contents {
        Some(c) => fs::write(path, c).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        None => {
            if path.exists() {
                fs::remove_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    }
}

fn bless(case: &Path, run: &Run) {
    let stdout = normalise(&run.stdout);
    let stderr = normalise(&run.stderr);
    bless_file(
        &case.join("expected.yaml"),
        Some(stdout.as_str()).filter(|s| !s.is_empty()),
    );
    bless_file(
        &case.join("expected-stderr.txt"),
        Some(stderr.as_str()).filter(|s| !s.is_empty()),
    );
    let code = format!("{}\n", run.code);
    bless_file(
        &case.join("expected-code"),
        Some(code.as_str()).filter(|_| run.code != 0),
    );
}

/// Compares one case; returns a readable report of every difference.
fn compare(name: &str, run: &Run, want: &Expected) -> Option<String> {
    let stdout = normalise(&run.stdout);
    let stderr = normalise(&run.stderr);
    let mut report = String::new();
    if stdout != want.stdout {
        let _ = writeln!(
            report,
            "--- {name}: stdout differs from expected.yaml\n{}",
            diff(&want.stdout, &stdout)
        );
    }
    if stderr != want.stderr {
        let _ = writeln!(
            report,
            "--- {name}: stderr differs from expected-stderr.txt\n{}",
            diff(&want.stderr, &stderr)
        );
    }
    if run.code != want.code {
        let _ = writeln!(
            report,
            "--- {name}: exit code {} (expected {})",
            run.code, want.code
        );
    }
    (!report.is_empty()).then_some(report)
}

/// Idempotence: the mutation of its own output is empty. Feeds the output back together with the
/// case's ServiceAccounts, AgentPools and flags and checks every patch.
fn check_idempotent(
    rt: &tokio::runtime::Runtime,
    name: &str,
    files: &[PathBuf],
    extra: &[String],
    run: &Run,
) -> Option<String> {
    let mut combined = run.stdout.clone();
    for f in files {
        let text = fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for doc in serde_saphyr::from_multiple::<Value>(&text).unwrap_or_default() {
            if matches!(
                doc.get("kind").and_then(Value::as_str),
                Some("ServiceAccount" | "AgentPool")
            ) {
                combined.push_str("---\n");
                combined.push_str(&wi_webhook::yaml::to_string(&doc));
            }
        }
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("golden-idempotence");
    fs::create_dir_all(&dir).expect("a scratch directory");
    let path = dir.join(format!("{name}.yaml"));
    fs::write(&path, combined).expect("scratch file written");
    let again = rt.block_on(execute(&parse_args(&[path], extra, "patch")));
    if again.code != 0 {
        return Some(format!(
            "--- {name}: mutating the output again exits {}: {}",
            again.code, again.stderr
        ));
    }
    let items: Vec<Value> = serde_json::from_str(&again.stdout).expect("-o patch prints JSON");
    let objects = serde_saphyr::from_multiple::<Value>(&run.stdout)
        .expect("mutate prints YAML")
        .len();
    if items.len() != objects {
        return Some(format!(
            "--- {name}: mutating the output again gave {} results for {objects} objects",
            items.len()
        ));
    }
    let non_empty: Vec<&Value> = items
        .iter()
        .filter(|i| i["patch"].as_array().is_none_or(|p| !p.is_empty()))
        .collect();
    (!non_empty.is_empty()).then(|| {
        format!(
            "--- {name}: not idempotent, mutating the output again patches:\n{}",
            serde_json::to_string_pretty(&non_empty).unwrap_or_default()
        )
    })
}

#[test]
fn golden() {
    let blessing = std::env::var_os("WI_BLESS").is_some_and(|v| v == "1");
    let rt = runtime();
    let mut cases: Vec<PathBuf> = fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "only {} golden cases found", cases.len());

    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let files = inputs(case);
        let extra: Vec<String> = read_opt(&case.join("args"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let run = rt.block_on(execute(&parse_args(&files, &extra, "yaml")));
        if blessing {
            bless(case, &run);
            eprintln!("blessed {name}: read its expected files before committing");
        } else if let Some(report) = compare(&name, &run, &expected(case)) {
            failures.push(report);
        }
        if run.code == 0
            && let Some(report) = check_idempotent(&rt, &name, &files, &extra, &run)
        {
            failures.push(report);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed (WI_BLESS=1 rewrites the expected files):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
