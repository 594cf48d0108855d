//! Certificates for wi-webhook: a small CA, serving and client certificates signed by it
//! (rcgen, ECDSA P-256), files on disk, and the checks `serve` runs before it accepts a
//! certificate/key pair.
//!
//! The same code makes the certificates of the test control plane (API server serving cert,
//! admin client cert, service-account signing key), so what the end-to-end tests exercise is
//! what production runs.

pub mod expiry;
pub mod files;
pub mod selfmanaged;

/// The time crate of this API (`OffsetDateTime` in validity windows).
pub use time;

mod ca;
mod encode;
mod error;
mod generate;
mod pair;
#[cfg(test)]
mod test_support;
mod write;

pub use ca::{Ca, Pem};
pub use encode::{ca_bundle, pem_encode, rfc3339, serial_hex};
pub use error::{CertificateError, GenerateError, LoadError};
pub use generate::{Bundle, GenerateOptions, default_not_before, generate, generate_signing_key};
pub use pair::{LoadedPair, load_pair, load_pair_at, parse_pair};
pub use write::{write_file, write_pair};

/// Common name of the CA the webhook (and the test tooling) generates.
pub const CA_COMMON_NAME: &str = "wi-webhook-ca";
/// Default lifetime of a serving or client certificate.
pub const DEFAULT_DAYS: u32 = 365;
/// Default lifetime of the CA: longer than the leaf, so renewing the serving certificate does
/// not change the caBundle every client trusts.
pub const DEFAULT_CA_DAYS: u32 = 3650;

/// File names inside a certificate directory (the names of a `kubernetes.io/tls` Secret, plus
/// the CA's).
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";
pub const TLS_CERT_FILE: &str = "tls.crt";
pub const TLS_KEY_FILE: &str = "tls.key";
