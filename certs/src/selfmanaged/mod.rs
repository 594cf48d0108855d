//! Self-managed mode: the webhook is its own certificate authority.
//!
//! All replicas share one Secret in the webhook's namespace (`kubernetes.io/tls`):
//!
//! | key | content |
//! |---|---|
//! | `ca.crt` | the trusted CAs, PEM, oldest first: one, or two during a CA rollover |
//! | `ca.key` | their private keys, PEM, in the same order |
//! | `tls.crt`, `tls.key` | the serving certificate (signed by one of the CAs) and its key |
//!
//! and the annotation [`ROLLOVER_ANNOTATION`], the time of the last step of a CA rollover.
//!
//! Every replica runs the same loop: read the Secret (create it when missing), write its
//! `ca.crt` into the caBundle of every webhook of the Mutating and Validating configurations
//! of the configured name, serve its `tls.crt`, and renew what is due. Writes are
//! compare-and-swap on the Secret's resourceVersion: when several replicas decide the same
//! renewal at once, one update wins, the others get 409 Conflict, read the winner's Secret
//! and find nothing left to do. A create that loses (409 AlreadyExists) reads the winner's.
//!
//! Renewal rules (see [`plan`]):
//! - the serving certificate when a third of its lifetime is left (never valid past its CA);
//! - the CA when a third of its lifetime is left, in three steps an *overlap* apart, so that
//!   no API server ever sees a certificate signed by a CA it does not trust yet: (1) a new CA
//!   is added to `ca.crt` (the caBundle now trusts both; serving certificates are still signed
//!   by the old CA); (2) once the caBundle has held both for an overlap, the serving
//!   certificate is re-issued by the new CA; (3) once every replica has had an overlap to
//!   pick that up, the old CA is dropped from `ca.crt` and the caBundle.
//!
//! The overlap is a twelfth of the CA lifetime, at most 7 days (for the default 10 years: 7
//! days, 3.3 years before the old CA expires), and must be at least three polls of the Secret.

mod ca;
mod ca_bundle;
mod error;
mod manager;
mod plan;
mod secret;
mod settings;
#[cfg(test)]
mod test_support;

pub use ca::CaCert;
pub use ca_bundle::{BundleState, same_bundle, sync_bundles};
pub use error::{Error, MaterialError, Problem};
pub use manager::{Manager, create_or_read};
pub use plan::{Plan, next_due, plan};
pub use secret::{Material, Parsed};
pub use settings::{MAX_OVERLAP, Settings, SettingsError};

/// Annotation of the Secret: when the last CA rollover step happened (RFC 3339). Present only
/// while `ca.crt` holds two CAs.
pub const ROLLOVER_ANNOTATION: &str = "wi-webhook.dev/ca-rollover-step-at";
/// Label of the Secret.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "wi-webhook";

/// The first 16 hex digits of a serial number, for messages.
fn short(serial: &str) -> &str {
    &serial[..serial.len().min(16)]
}
