//! The cases of the parity test: one cluster state (ServiceAccounts, AgentPools), the objects
//! judged against it and the `mutate` flags, and how each entry point is invoked on them.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches, Parser};
use k8s_openapi::api::core::v1::ServiceAccount;
use serde_json::Value;
use wi_webhook::admission::Admitter;
use wi_webhook::cli::NativeSidecar;
use wi_webhook::cli::audit::AuditArgs;
use wi_webhook::cli::mutate::MutateArgs;
use wi_webhook::policy::crd::AgentPool;
use wi_webhook::policy::{Policy, Pool};
use wi_webhook::serviceaccounts::{ServiceAccounts, store_of};

use super::{TENANT, api_entry};

#[derive(Parser, Debug)]
#[command(name = "mutate", args_override_self = true)]
struct M {
    #[command(flatten)]
    a: MutateArgs,
}

#[derive(Parser, Debug)]
#[command(name = "audit", args_override_self = true)]
struct A {
    #[command(flatten)]
    a: AuditArgs,
}

/// Flags parsed as the binary parses them, the environment left out.
fn parse<T: CommandFactory + FromArgMatches>(argv: &[String]) -> T {
    let command = T::command().mut_args(|a| a.env(None::<&str>));
    command
        .try_get_matches_from(argv)
        .and_then(|m| T::from_arg_matches(&m))
        .unwrap_or_else(|e| panic!("cannot parse {argv:?}: {e}"))
}

pub struct Case {
    pub name: String,
    /// ServiceAccounts and AgentPools.
    pub state: Vec<Value>,
    pub objects: Vec<Value>,
    /// Extra `mutate` flags.
    pub args: Vec<String>,
}

impl Case {
    pub fn mutate_args(&self, file: &Path, output: &str) -> MutateArgs {
        let mut argv: Vec<String> = ["mutate", "-o", output, "--tenant-id", TENANT]
            .map(String::from)
            .to_vec();
        argv.extend(["-f".into(), file.display().to_string()]);
        argv.extend(self.args.iter().cloned());
        parse::<M>(&argv).a
    }

    /// The `mutate` flags that `audit` has too (tenant, token path, namespace).
    pub fn audit_args(&self, file: &Path) -> AuditArgs {
        let mut argv: Vec<String> = ["audit", "-o", "json", "--tenant-id", TENANT]
            .map(String::from)
            .to_vec();
        argv.extend(["-f".into(), file.display().to_string()]);
        let mut args = self.args.iter();
        while let Some(a) = args.next() {
            if a.starts_with("--tenant-id=") {
                argv.push(a.clone());
            } else if ["--tenant-id", "--token-mount-path", "--namespace", "-n"].contains(&&**a) {
                argv.push(a.clone());
                argv.extend(args.next().cloned());
            }
        }
        parse::<A>(&argv).a
    }

    /// Flags of `mutate` that `audit` has no counterpart of.
    pub fn mutate_only_flags(&self) -> bool {
        self.args.iter().any(|a| a == "--azure-environment")
    }

    pub fn default_namespace(&self) -> String {
        let mut args = self.args.iter();
        while let Some(a) = args.next() {
            if a == "--namespace" || a == "-n" {
                return args.next().cloned().unwrap_or_default();
            }
        }
        "default".into()
    }

    /// The webhook behind the cluster: the state as `serve` would cache it, and the
    /// configuration `mutate` runs with.
    pub fn admitter(&self, args: &MutateArgs) -> Admitter {
        let namespace = self.default_namespace();
        let accounts = self.state.iter().filter(|d| d["kind"] == "ServiceAccount");
        let accounts = accounts.map(|d| {
            let mut sa: ServiceAccount = serde_json::from_value(d.clone()).unwrap();
            sa.metadata.namespace.get_or_insert(namespace.clone());
            sa
        });
        let pools: Vec<Pool> = self
            .state
            .iter()
            .filter(|d| d["kind"] == "AgentPool")
            .map(|d| serde_json::from_value::<AgentPool>(d.clone()).unwrap())
            .filter_map(|p| Pool::from_resource(&p))
            .collect();
        let native = args.mutation.native_sidecar != NativeSidecar::Never;
        Admitter {
            config: args.mutation.config(native).expect("a valid configuration"),
            service_accounts: ServiceAccounts::from_store(store_of(accounts)),
            policy: Policy::of(&pools),
        }
    }
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("parity");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}.yaml"))
}

pub fn write_yaml(path: &Path, docs: &[&Value], more: &str) {
    let mut text: Vec<String> = docs.iter().map(wi_webhook::yaml::to_string).collect();
    if !more.is_empty() {
        text.push(more.to_string());
    }
    std::fs::write(path, text.join("---\n")).unwrap();
}

/// Every golden case of `tests/golden/` whose input can be read.
pub fn golden_cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("tests/golden"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut cases = Vec::new();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let files: Vec<PathBuf> = match std::fs::read_to_string(dir.join("inputs")) {
            Ok(list) => list
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| root.join("..").join(l))
                .collect(),
            Err(_) => vec![dir.join("input.yaml")],
        };
        let args: Vec<String> = std::fs::read_to_string(dir.join("args"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let docs = match wi_webhook::inputs::read_all(&files) {
            Ok(docs) => docs.into_iter().map(|d| d.value).collect::<Vec<_>>(),
            // Unreadable input: no decision to compare (the golden test checks exit 2).
            Err(_) => continue,
        };
        let (state, rest): (Vec<Value>, Vec<Value>) = docs
            .into_iter()
            .partition(|d| d["kind"] == "ServiceAccount" || d["kind"] == "AgentPool");
        let objects = rest
            .into_iter()
            .filter(|d| api_entry(d).is_some())
            .collect();
        cases.push(Case {
            name,
            state,
            objects,
            args,
        });
    }
    cases
}
