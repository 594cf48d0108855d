//! `wi-webhook doctor`: why one agent gets no token, step by step along the chain Entra ID
//! walks (pod label, mutation, ServiceAccount, pool verdict, token claims, federated
//! credential). The steps are pure functions of what the command read from the cluster, so
//! each verdict and each fix is unit-tested; `cli::doctor` only gathers the inputs.

mod claims;
mod steps;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::federation::Credentials;
use crate::federation::token::Claims;
use crate::policy::Pool;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// Not a failure: something doctor could not check, or nothing to check.
    Note,
}

/// One line of the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do, when the step fails.
    pub fix: Option<String>,
}

impl Step {
    fn pass(name: &'static str, detail: String) -> Self {
        Step {
            name,
            status: Status::Pass,
            detail,
            fix: None,
        }
    }
    fn fail(name: &'static str, detail: String, fix: String) -> Self {
        Step {
            name,
            status: Status::Fail,
            detail,
            fix: Some(fix),
        }
    }
    fn note(name: &'static str, detail: String) -> Self {
        Step {
            name,
            status: Status::Note,
            detail,
            fix: None,
        }
    }
}

/// The outcome of asking the API server for a token of the pod's ServiceAccount.
#[derive(Clone, Debug)]
pub enum Token {
    Minted(Claims),
    /// The user running doctor may not mint one (HTTP 403): the API server's message.
    Refused(String),
    /// Any other error.
    Failed(String),
}

/// Everything the walk needs, read from the cluster by the command.
pub struct Inputs<'a> {
    /// The pod as stored (after admission).
    pub pod: &'a Value,
    pub namespace: &'a str,
    /// The ServiceAccount's annotations; None when it does not exist.
    pub service_account: Option<&'a BTreeMap<String, String>>,
    pub pools: &'a [Pool],
    /// Why the AgentPools could not be read, if they could not.
    pub pools_error: Option<&'a str>,
    /// The webhook's configured audience and token volume name.
    pub audience: &'a str,
    pub volume_name: &'a str,
    /// The webhook's tenant (for the pool verdict's env checks).
    pub tenant_id: &'a str,
    /// The issuer of the cluster's discovery document, or why it could not be read.
    pub issuer: Result<&'a str, &'a str>,
    pub token: &'a Token,
    pub credentials: Option<&'a Credentials>,
    /// Seconds since the epoch, for the token's remaining lifetime.
    pub now: i64,
}

/// The claims the agent's token carries (or would carry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub iss: Option<String>,
    pub sub: String,
    pub aud: String,
}

/// Every step, in the order the chain runs.
pub fn walk(i: &Inputs<'_>) -> Vec<Step> {
    let sa_name = i
        .pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let mut out = vec![steps::label(i), steps::mutation(i)];
    let (sa_step, client_id) = steps::service_account(i, sa_name);
    out.push(sa_step);
    out.push(steps::pool(i));
    out.push(claims::issuer(i));
    let (token_step, expected) = claims::token(i, sa_name);
    out.push(token_step);
    if let Some(creds) = i.credentials {
        out.push(claims::credential(creds, client_id.as_deref(), &expected));
    }
    out
}

/// The audience the pod's tokens carry: its projected token volume's, else the webhook's.
pub fn token_audience(pod: &Value, volume_name: &str, default: &str) -> String {
    steps::volume_audience(pod, volume_name)
        .unwrap_or(default)
        .to_string()
}

/// 0 when every step passes, 1 when one fails.
pub fn exit_code(steps: &[Step]) -> u8 {
    u8::from(steps.iter().any(|s| s.status == Status::Fail))
}

/// One line per step: status, step, what was found and, for a failure, the fix.
pub fn render(steps: &[Step]) -> String {
    let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    steps
        .iter()
        .map(|s| {
            let status = match s.status {
                Status::Pass => "ok  ",
                Status::Fail => "FAIL",
                Status::Note => "note",
            };
            let fix = s
                .fix
                .as_ref()
                .map(|f| format!(" -- fix: {f}"))
                .unwrap_or_default();
            format!("{status}  {:<width$}  {}{fix}\n", s.name, s.detail)
        })
        .collect()
}
