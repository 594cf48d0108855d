//! What stops the self-managed mode: bad settings at start-up, or a round that cannot
//! read, create or use the Secret (at start-up fatal, in the loop retried).

use super::{MaterialError, SettingsError};
use crate::GenerateError;

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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_start_up_failure_reads_as_one_message() {
        let error = Error::Start(Box::new(Error::Material(MaterialError {
            secret: "Secret ns/tls".into(),
            problem: "no ca.key".into(),
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
