//! `wi-webhook mutate`: the webhook's mutation of manifests, without a cluster.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::{MutationArgs, NativeSidecar};
use crate::inputs;
use crate::offline::{Mutated, Offline};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The mutated objects as multi-document YAML.
    Yaml,
    /// The mutated objects as a JSON List.
    Json,
    /// The JSON patch of each object (relative to the pod, or to a workload's pod template).
    Patch,
}

#[derive(Args, Debug)]
pub struct MutateArgs {
    /// File or directory of manifests (repeatable; `-` reads stdin). ServiceAccounts among
    /// them are the cluster state; every Pod and workload pod template is mutated.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE_OR_DIR"
    )]
    pub files: Vec<PathBuf>,

    #[arg(short, long, value_enum, default_value = "yaml")]
    pub output: Output,

    /// Namespace of objects that name none.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,

    #[command(flatten)]
    pub mutation: MutationArgs,
}

/// What a `mutate` run prints and how it exits.
#[derive(Debug, PartialEq, Eq)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    /// 0: every object admitted; 1: a denial; 2: unreadable input or bad flags.
    pub code: u8,
}

pub async fn run(args: MutateArgs) -> ExitCode {
    let result = execute(&args).await;
    eprint!("{}", result.stderr);
    if std::io::stdout()
        .lock()
        .write_all(result.stdout.as_bytes())
        .is_err()
    {
        return ExitCode::from(2);
    }
    ExitCode::from(result.code)
}

/// The whole command without touching stdout: the golden tests call this.
pub async fn execute(args: &MutateArgs) -> Run {
    let fail = |e: &dyn std::fmt::Display| Run {
        stdout: String::new(),
        stderr: format!("error: {e}\n"),
        code: 2,
    };
    let docs = match inputs::read_all(&args.files) {
        Ok(d) => d,
        Err(e) => return fail(&e),
    };
    let native = args.mutation.native_sidecar != NativeSidecar::Never;
    let config = match args.mutation.config(native) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let offline = match Offline::new(&docs, config, &args.namespace) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let results = offline.mutate_all(&docs).await;
    let mut stderr = String::new();
    for r in &results {
        for w in &r.warnings {
            stderr += &format!("warning: {} {}/{}: {w}\n", r.kind, r.namespace, r.name);
        }
        let audited = r
            .violations
            .iter()
            .filter(|v| v.enforcement == crate::policy::crd::Enforcement::Audit);
        for v in audited {
            stderr += &format!("audit: {} {}/{}: {v}\n", r.kind, r.namespace, r.name);
        }
        if let Some(d) = &r.denial {
            stderr += &format!(
                "denied: {} {}/{} ({}): {d}\n",
                r.kind, r.namespace, r.name, r.source
            );
        }
    }
    Run {
        stdout: render(&results, args.output),
        code: if results.iter().any(|r| r.denial.is_some()) {
            1
        } else {
            0
        },
        stderr,
    }
}

/// Renders the results; denied objects are left out of yaml and json output.
pub fn render(results: &[Mutated], output: Output) -> String {
    let admitted = results.iter().filter(|r| r.denial.is_none());
    match output {
        Output::Yaml => admitted
            .map(|r| crate::yaml::to_string(&r.object))
            .collect::<Vec<_>>()
            .join("---\n"),
        Output::Json => {
            let items: Vec<&Value> = admitted.map(|r| &r.object).collect();
            let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
            serde_json::to_string_pretty(&list).expect("JSON values serialise") + "\n"
        }
        Output::Patch => {
            let items: Vec<Value> = admitted
                .map(|r| {
                    json!({"kind": r.kind, "namespace": r.namespace, "name": r.name, "patch": r.patch})
                })
                .collect();
            serde_json::to_string_pretty(&items).expect("JSON values serialise") + "\n"
        }
    }
}
