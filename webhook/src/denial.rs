//! A refused admission: the one error type of the decision logic, rendered by the API layer
//! as an AdmissionResponse with `allowed: false`, and by the CLI as a message and exit 1.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// HTTP-style code placed in the response's `status.code`.
    pub code: u16,
    /// Stable identifier of the rule that refused, e.g. `token-expiration`.
    pub rule: &'static str,
    /// One line naming the pod, the field and what to do.
    pub message: String,
}

impl Denial {
    /// A pod whose own fields or annotations are unusable (400).
    pub fn invalid(rule: &'static str, message: impl Into<String>) -> Self {
        Denial {
            code: 400,
            rule,
            message: message.into(),
        }
    }

    pub fn not_found(rule: &'static str, message: impl Into<String>) -> Self {
        Denial {
            code: 404,
            rule,
            message: message.into(),
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

impl std::error::Error for Denial {}
