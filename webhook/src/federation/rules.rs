//! The federated-credential audit: each credential checked against the AgentPools, the
//! cluster's service-account issuer and the webhook's audience, and each pool's
//! ServiceAccounts checked for a credential that lets their agents get a token. Pure.

use super::{Credential, Credentials, MAX_CREDENTIALS_PER_IDENTITY, subject};
use crate::audit::Finding;
use crate::policy::Pool;
use crate::policy::index::client_key;

/// Rule ids: stable, printed in every message.
pub mod rule {
    /// The subject is not `system:serviceaccount:<namespace>:<serviceaccount>`.
    pub const SUBJECT_FORMAT: &str = "fic-subject-format";
    /// The issuer is not exactly the cluster's service-account issuer.
    pub const ISSUER: &str = "fic-issuer";
    /// The audiences are not exactly the webhook's audience.
    pub const AUDIENCE: &str = "fic-audience";
    /// A pool's identity trusts a ServiceAccount outside the pool.
    pub const OUTSIDE_POOL: &str = "fic-trusts-outside-pool";
    /// A pool's ServiceAccount that no credential of the pool's identity trusts.
    pub const UNTRUSTED: &str = "fic-service-account-untrusted";
    /// An identity that is no pool's trusts a pool's ServiceAccount.
    pub const NO_POOL_IDENTITY: &str = "fic-identity-of-no-pool";
    /// More credentials on one identity than Azure allows.
    pub const TOO_MANY: &str = "fic-too-many-credentials";

    pub const ALL: [&str; 7] = [
        SUBJECT_FORMAT,
        ISSUER,
        AUDIENCE,
        OUTSIDE_POOL,
        UNTRUSTED,
        NO_POOL_IDENTITY,
        TOO_MANY,
    ];
}

/// What the credentials are judged against.
pub struct Context<'a> {
    pub pools: &'a [Pool],
    /// The cluster's service-account issuer, exactly as its tokens carry it.
    pub issuer: &'a str,
    /// The audience of the tokens the webhook projects.
    pub audience: &'a str,
}

/// The findings, and notes on what could not be checked (for stderr).
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
}

pub fn audit(creds: &Credentials, ctx: &Context<'_>) -> Report {
    let mut pools: Vec<&Pool> = ctx.pools.iter().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let pairs: Vec<(&str, &str)> = pools
        .iter()
        .flat_map(|p| {
            p.namespaces.iter().flat_map(|ns| {
                p.service_accounts
                    .iter()
                    .map(move |sa| (ns.as_str(), sa.as_str()))
            })
        })
        .collect();
    let mut report = Report::default();
    for c in &creds.credentials {
        check_credential(creds, c, ctx, &pools, &pairs, &mut report);
    }
    too_many(creds, &mut report);
    for pool in pools {
        untrusted(creds, pool, ctx, &mut report);
    }
    report
}

/// The name of a credential's identity: its own, else the last segment of the resource id
/// or Terraform address the credential points at.
fn identity_name(creds: &Credentials, c: &Credential) -> String {
    match creds.identity_of(c) {
        Some(i) => i.name.clone(),
        None => c
            .identity
            .rsplit(['/', '.'])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// The identity's name and client id, for messages.
fn identity_display(creds: &Credentials, c: &Credential) -> String {
    // An identity read without its client id is one a Terraform plan has yet to create.
    let client = match creds.identity_of(c) {
        Some(i) => i.client_id.as_deref().unwrap_or(super::terraform::UNKNOWN),
        None => "unknown: the identity is not among the inputs",
    };
    let name = identity_name(creds, c);
    let name = if name.is_empty() { "(unknown)" } else { &name };
    format!("{name} (client id {client})")
}

fn credential_finding(
    creds: &Credentials,
    c: &Credential,
    namespace: &str,
    pool: Option<&Pool>,
    rule: &str,
    message: String,
) -> Finding {
    let identity = identity_name(creds, c);
    Finding {
        api_version: "Microsoft.ManagedIdentity".into(),
        kind: "FederatedIdentityCredential".into(),
        namespace: namespace.to_string(),
        name: if identity.is_empty() {
            c.name.clone()
        } else {
            format!("{identity}/{}", c.name)
        },
        uid: None,
        source: c.source.clone(),
        pool: pool.map(|p| p.name.clone()).unwrap_or_default(),
        team: pool.map(|p| p.team.clone()).unwrap_or_default(),
        rule: rule.to_string(),
        enforcement: pool
            .map(|p| p.enforcement.as_str().to_string())
            .unwrap_or_default(),
        message,
    }
}

fn in_pool(pool: &Pool, (ns, sa): (&str, &str)) -> bool {
    pool.namespaces.iter().any(|n| n == ns) && pool.service_accounts.iter().any(|s| s == sa)
}

fn check_credential(
    creds: &Credentials,
    c: &Credential,
    ctx: &Context<'_>,
    pools: &[&Pool],
    pairs: &[(&str, &str)],
    report: &mut Report,
) {
    let client = creds.client_of(c).map(client_key);
    let owners: Vec<&Pool> = pools
        .iter()
        .copied()
        .filter(|p| client.as_deref() == Some(client_key(&p.client_id).as_str()))
        .collect();
    let parsed = subject::parse(&c.subject);
    let meant = match parsed {
        Some(_) => None,
        None => subject::meant(&c.subject, pairs.iter().copied()),
    };
    let target = parsed.or(meant);
    let targets: Vec<&Pool> = match target {
        Some(t) => pools.iter().copied().filter(|p| in_pool(p, t)).collect(),
        None => Vec::new(),
    };
    // Credentials of other identities for other clusters (the same namespace names under
    // another issuer) or other workloads are not this audit's.
    let this_cluster = normalized(&c.issuer) == normalized(ctx.issuer);
    if owners.is_empty() && (targets.is_empty() || !this_cluster) {
        return;
    }
    if owners.is_empty() && client.is_none() {
        report.notes.push(format!(
            "credential {} ({}) trusts a pool's ServiceAccount, but its identity's client id is unknown: \
             add the identity's `az identity show -o json` (or the state after apply) to tell whether it is the pool's",
            c.name, c.source
        ));
    }
    let pool = owners.first().or(targets.first()).copied();
    let namespace = target.map_or("", |t| t.0);
    let who = format!(
        "credential {} of identity {}",
        c.name,
        identity_display(creds, c)
    );
    let mut push = |pool: Option<&Pool>, rule: &str, message: String| {
        report
            .findings
            .push(credential_finding(creds, c, namespace, pool, rule, message));
    };

    if parsed.is_none() {
        let hint = match meant {
            Some((ns, sa)) => format!(
                "it most likely means {} (ServiceAccount {ns}/{sa}); set subject to exactly that",
                subject::of(ns, sa)
            ),
            None => "set it to the subject of the agents' ServiceAccount".to_string(),
        };
        push(
            pool,
            rule::SUBJECT_FORMAT,
            format!(
                "{who} trusts subject {:?}, which is not system:serviceaccount:<namespace>:<serviceaccount>: \
                 no service-account token carries it, so no agent gets a token through it; {hint}",
                c.subject
            ),
        );
    }
    if c.issuer != ctx.issuer {
        let why = if c.issuer.trim_end_matches('/') == ctx.issuer.trim_end_matches('/') {
            " (they differ only in the trailing slash, which Entra ID compares too)"
        } else if owners.is_empty() {
            ""
        } else {
            ": service-account tokens of another cluster get the pool's identity"
        };
        push(
            pool,
            rule::ISSUER,
            format!(
                "{who} trusts issuer {:?}, not the cluster's service-account issuer {:?}{why}; set issuer to exactly {:?}",
                c.issuer, ctx.issuer, ctx.issuer
            ),
        );
    }
    if c.audiences != [ctx.audience] {
        push(
            pool,
            rule::AUDIENCE,
            format!(
                "{who} accepts audiences {:?}, but the agents' tokens carry audience {:?}; set audiences to [{:?}]",
                c.audiences, ctx.audience, ctx.audience
            ),
        );
    }
    for owner in &owners {
        if let Some(t) = parsed
            && c.issuer == ctx.issuer
            && !in_pool(owner, t)
        {
            let whose = match targets.first() {
                Some(other) => format!("a ServiceAccount of pool {}", other.name),
                None => "not one of the pool's ServiceAccounts".to_string(),
            };
            push(
                Some(owner),
                rule::OUTSIDE_POOL,
                format!(
                    "{who} of pool {} (team {}) trusts {} ({whose}): pods running as ServiceAccount {}/{} get the pool's identity; \
                     delete the credential, or give that workload its own identity (one identity, one pool)",
                    owner.name, owner.team, c.subject, t.0, t.1
                ),
            );
        }
    }
    if owners.is_empty()
        && client.is_some()
        && let (Some(t), Some(target_pool)) = (target, targets.first())
    {
        push(
            Some(target_pool),
            rule::NO_POOL_IDENTITY,
            format!(
                "{who} is no pool's identity but trusts ServiceAccount {}/{} of pool {} (team {}): the pool's agents can take it; \
                 delete the credential, or make it the pool's identity in the AgentPool",
                t.0, t.1, target_pool.name, target_pool.team
            ),
        );
    }
}

fn too_many(creds: &Credentials, report: &mut Report) {
    let mut counted: Vec<(String, Vec<&Credential>)> = Vec::new();
    for c in creds.credentials.iter().filter(|c| !c.identity.is_empty()) {
        let key = creds
            .identity_of(c)
            .and_then(|i| i.keys.first().cloned())
            .unwrap_or_else(|| c.identity.clone());
        let key = super::id_key(&key);
        match counted.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(c),
            None => counted.push((key, vec![c])),
        }
    }
    for (_, list) in counted {
        if list.len() > MAX_CREDENTIALS_PER_IDENTITY {
            let first = list[0];
            let mut f = credential_finding(
                creds,
                first,
                "",
                None,
                rule::TOO_MANY,
                format!(
                    "identity {} has {} federated credentials; Azure accepts at most {MAX_CREDENTIALS_PER_IDENTITY} on one identity: \
                     delete the unused ones, or split the workloads over identities (one per pool)",
                    identity_display(creds, first),
                    list.len()
                ),
            );
            f.kind = "UserAssignedIdentity".into();
            f.name = identity_name(creds, first);
            report.findings.push(f);
        }
    }
}

fn untrusted(creds: &Credentials, pool: &Pool, ctx: &Context<'_>, report: &mut Report) {
    let mine: Vec<&Credential> = creds.of_client(&pool.client_id).collect();
    if mine.is_empty() && !creds.knows_client(&pool.client_id) {
        report.notes.push(format!(
            "pool {}: identity {} is not among the credentials read (a Terraform plan knows no client id before the identity exists): which of its ServiceAccounts a credential trusts was not checked",
            pool.name, pool.client_id
        ));
        return;
    }
    for ns in &pool.namespaces {
        for sa in &pool.service_accounts {
            let want = subject::of(ns, sa);
            let exact = |c: &&Credential| {
                c.issuer == ctx.issuer && c.subject == want && c.audiences == [ctx.audience]
            };
            if mine.iter().any(exact) {
                continue;
            }
            // The credential that names this ServiceAccount and gets most other fields right.
            let score = |c: &&&Credential| {
                let names = subject::meant(&c.subject, [(ns.as_str(), sa.as_str())]).is_some();
                let right = [
                    c.subject == want,
                    c.issuer == ctx.issuer,
                    c.audiences == [ctx.audience],
                ];
                names.then(|| right.iter().filter(|r| **r).count())
            };
            let closest = mine
                .iter()
                .filter(|c| score(c).is_some())
                .min_by_key(|c| std::cmp::Reverse(score(c)))
                .map(|c| {
                    format!(
                        " (credential {} comes closest: see its other findings)",
                        c.name
                    )
                })
                .unwrap_or_default();
            report.findings.push(Finding {
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                namespace: ns.clone(),
                name: sa.clone(),
                uid: None,
                source: "AgentPool ".to_string() + &pool.name,
                pool: pool.name.clone(),
                team: pool.team.clone(),
                rule: rule::UNTRUSTED.into(),
                enforcement: pool.enforcement.as_str().into(),
                message: format!(
                    "ServiceAccount {ns}/{sa} of pool {} (team {}): no federated credential of the pool's identity {} trusts \
                     issuer {:?}, subject {want:?}, audience {:?} exactly, so its agents get no token (AADSTS70021){closest}; \
                     add one: az identity federated-credential create --identity-name <identity> --resource-group <group> \
                     --name {ns}-{sa} --issuer {} --subject {want} --audiences {}",
                    pool.name, pool.team, pool.client_id, ctx.issuer, ctx.audience, ctx.issuer, ctx.audience
                ),
            });
        }
    }
}

/// An issuer as a person would compare it: no surrounding space, case or trailing slash.
fn normalized(issuer: &str) -> String {
    issuer.trim().trim_end_matches('/').to_ascii_lowercase()
}
