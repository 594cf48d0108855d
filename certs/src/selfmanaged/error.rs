//! What stops the self-managed mode: bad settings at start-up, or a round that cannot
//! read, create or use the Secret (at start-up fatal, in the loop retried).

use super::SettingsError;
use crate::{CA_CERT_FILE, CA_KEY_FILE, CertificateError, GenerateError, LoadError, TLS_CERT_FILE};

/// Every error names what it was about. Causes are part of the message and not chained:
/// the loop logs errors with their message only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    /// A call to the API server failed; `hint` names the RBAC it needs when it was refused.
    #[error("{what}: {error}{hint}")]
    Api {
        what: String,
        error: kube::Error,
        hint: String,
    },
    /// The first round, at start-up.
    #[error("self-managed certificate: {0}")]
    Start(Box<Error>),
}

/// Why the Secret cannot be used. Every message names the Secret and the key.
#[derive(Debug, thiserror::Error)]
#[error(
    "{secret}: {problem}; fix it, or delete the Secret to have a new CA and certificate created (the caBundle is rewritten)"
)]
pub struct MaterialError {
    pub secret: String,
    pub problem: Problem,
}

/// What is wrong in the Secret, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("no {key}")]
    Missing { key: &'static str },
    #[error("{key}: malformed PEM: {error}")]
    MalformedPem {
        key: &'static str,
        error: rustls::pki_types::pem::Error,
    },
    #[error(
        "{} holds {certificates} certificate(s) and {} {keys} key(s); they must pair up, in \
         the same order",
        CA_CERT_FILE,
        CA_KEY_FILE
    )]
    Unpaired { certificates: usize, keys: usize },
    #[error("{}: key #{index}: {error}", CA_KEY_FILE)]
    CaKey { index: usize, error: rcgen::Error },
    #[error(
        "{} certificate #{index} and {} key #{index}: {error}",
        CA_CERT_FILE,
        CA_KEY_FILE
    )]
    CaPair { index: usize, error: GenerateError },
    #[error("{}: {error}", CA_CERT_FILE)]
    Ca { error: GenerateError },
    /// The serving certificate and its key (the message names the key).
    #[error("{0}")]
    Leaf(LoadError),
    #[error("{}: {error}", TLS_CERT_FILE)]
    LeafCertificate { error: CertificateError },
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_start_up_failure_reads_as_one_message() {
        let error = Error::Start(Box::new(Error::Material(MaterialError {
            secret: "Secret ns/tls".into(),
            problem: Problem::Missing { key: CA_KEY_FILE },
        })));
        assert_eq!(
            error.to_string(),
            "self-managed certificate: Secret ns/tls: no ca.key; fix it, or delete the Secret to \
             have a new CA and certificate created (the caBundle is rewritten)"
        );
        // Not chained: `{:#}` (the command line's form) prints it once.
        assert!(error.source().is_none());
        assert_eq!(anyhow_like(&error), error.to_string());
    }

    /// What `anyhow`'s `{:#}` prints: the message, then each cause after ": ".
    fn anyhow_like(error: &dyn std::error::Error) -> String {
        let mut out = error.to_string();
        let mut cause = error.source();
        while let Some(c) = cause {
            out.push_str(&format!(": {c}"));
            cause = c.source();
        }
        out
    }
}
