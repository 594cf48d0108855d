//! The steps on the token's claims: the cluster's issuer, the token minted for the pod's
//! ServiceAccount, and the federated credential that must match it exactly.

use super::steps::volume_audience;
use super::{Expected, Inputs, Step, Token};
use crate::federation::{Credential, Credentials, subject};

pub fn issuer(i: &Inputs<'_>) -> Step {
    match i.issuer {
        Ok(iss) => Step::pass(
            "issuer",
            format!("the cluster's service-account issuer is {iss} (discovery document)"),
        ),
        Err(e) => Step::note(
            "issuer",
            format!("cannot read /.well-known/openid-configuration ({e}); the token's iss is used"),
        ),
    }
}

pub fn token(i: &Inputs<'_>, sa: &str) -> (Step, Expected) {
    let sub = subject::of(i.namespace, sa);
    let aud = volume_audience(i.pod, i.volume_name)
        .unwrap_or(i.audience)
        .to_string();
    let discovered = i.issuer.ok().map(str::to_string);
    match i.token {
        Token::Minted(claims) => {
            let expires = claims
                .exp
                .map_or("no exp".into(), |e| format!("exp {e} (in {} s)", e - i.now));
            let detail = format!(
                "iss={} sub={} aud={} {expires}",
                claims.iss,
                claims.sub,
                claims.aud.join(",")
            );
            let expected = Expected {
                iss: Some(claims.iss.clone()),
                sub: sub.clone(),
                aud: aud.clone(),
            };
            let mut wrong = Vec::new();
            if claims.sub != sub {
                wrong.push(format!("sub is not {sub}"));
            }
            if !claims.aud.contains(&aud) {
                wrong.push(format!("aud does not contain {aud}"));
            }
            if let Some(iss) = discovered.as_ref().filter(|iss| **iss != claims.iss) {
                wrong.push(format!("iss is not the discovery document's {iss}"));
            }
            let step = if wrong.is_empty() {
                Step::pass("token", detail)
            } else {
                Step::fail(
                    "token",
                    format!("{detail}: {}", wrong.join(", ")),
                    "the API server's first --service-account-issuer signs the tokens; make the discovery document and the credentials name that one".into(),
                )
            };
            (step, expected)
        }
        Token::Refused(why) => {
            let iss = discovered.clone().unwrap_or_else(|| "(unknown)".into());
            let step = Step::note(
                "token",
                format!(
                    "you may not mint a token for {}/{sa} ({why}); the agent's token carries iss={iss} sub={sub} aud={aud} \
                     (minting needs create on serviceaccounts/token; for a pool's ServiceAccount also a place in the \
                     AgentPool's spec.access.tokenRequesters [pool-token-request])",
                    i.namespace
                ),
            );
            (
                step,
                Expected {
                    iss: discovered,
                    sub,
                    aud,
                },
            )
        }
        Token::Failed(why) => {
            let step = Step::fail(
                "token",
                format!("the API server did not mint a token for {}/{sa}: {why}", i.namespace),
                "check that the ServiceAccount exists and the API server runs with --service-account-issuer and --service-account-signing-key-file".into(),
            );
            (
                step,
                Expected {
                    iss: discovered,
                    sub,
                    aud,
                },
            )
        }
    }
}

/// Which fields of a credential differ from the token's claims.
fn differences(c: &Credential, e: &Expected) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(iss) = &e.iss
        && c.issuer != *iss
    {
        out.push(format!("issuer (credential {:?}, token {iss:?})", c.issuer));
    }
    if c.subject != e.sub {
        out.push(format!(
            "subject (credential {:?}, token {:?})",
            c.subject, e.sub
        ));
    }
    if !c.audiences.contains(&e.aud) {
        out.push(format!(
            "audience (credential {:?}, token {:?})",
            c.audiences, e.aud
        ));
    }
    out
}

pub fn credential(creds: &Credentials, client_id: Option<&str>, e: &Expected) -> Step {
    let of_client: Vec<&Credential> = client_id
        .map(|c| creds.of_client(c).collect())
        .unwrap_or_default();
    let identity = client_id.unwrap_or("(none)");
    let candidates: Vec<&Credential> = if !of_client.is_empty() {
        of_client
    } else if client_id.is_some_and(|c| creds.knows_client(c)) {
        return Step::fail(
            "credential",
            format!("identity {identity} has no federated credential among those read"),
            format!(
                "create one: az identity federated-credential create --issuer {} --subject {} --audiences {} ...",
                e.iss.as_deref().unwrap_or("<issuer>"),
                e.sub,
                e.aud
            ),
        );
    } else {
        // Credentials whose identity the inputs do not describe may still be this one's.
        creds
            .credentials
            .iter()
            .filter(|c| creds.client_of(c).is_none())
            .collect()
    };
    if let Some(c) = candidates.iter().find(|c| differences(c, e).is_empty()) {
        let unchecked = if e.iss.is_none() {
            " (issuer not checked: unknown)"
        } else {
            ""
        };
        return Step::pass(
            "credential",
            format!(
                "credential {} of identity {identity} matches the token's issuer, subject and audience{unchecked}",
                c.name
            ),
        );
    }
    let Some(closest) = candidates.iter().min_by_key(|c| differences(c, e).len()) else {
        return Step::fail(
            "credential",
            format!("no federated credential of identity {identity} among those read"),
            "pass the identity's credentials (az identity federated-credential list ... -o json) and its az identity show output".into(),
        );
    };
    let diff = differences(closest, e);
    Step::fail(
        "credential",
        format!(
            "no credential of identity {identity} matches the token exactly; the closest, {}, differs in {}",
            closest.name,
            diff.join(", ")
        ),
        format!(
            "set those fields of {} to the token's values (Entra ID answers AADSTS70021 until one credential matches exactly)",
            closest.name
        ),
    )
}
