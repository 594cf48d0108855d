//! What goes wrong making certificates and checking a pair on disk; every message names
//! the file.

use std::path::PathBuf;

/// Why bytes are not a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(transparent)]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error(transparent)]
    X509(#[from] x509_parser::nom::Err<x509_parser::error::X509Error>),
}

/// Errors of generation and of writing files.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot generate certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: cannot write: {error}")]
    Write {
        path: PathBuf,
        // Not `source`: the message includes it, and a source would print it twice in a
        // chain (`{:#}`).
        error: std::io::Error,
    },
    #[error("{path}: cannot read: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the CA private key does not match the CA certificate")]
    CaKeyMismatch,
    /// The cause is in the message (not chained): logs print errors with their message only.
    #[error("not a certificate: {0}")]
    BadCertificate(CertificateError),
}

/// What is wrong with a certificate/key pair on disk. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: unreadable: {error}")]
    Unreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: malformed PEM or DER: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: no certificate (expected a PEM `CERTIFICATE` block)")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no private key (expected a PEM PKCS#8, PKCS#1 or SEC1 private key block)")]
    NoKey { path: PathBuf },
    #[error("{path}: unsupported private key: {reason}")]
    UnsupportedKey { path: PathBuf, reason: String },
    #[error("{key_path}: private key does not match the certificate in {cert_path}")]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    #[error("{path}: certificate #{index} (subject {subject}) expired at {not_after}")]
    Expired {
        path: PathBuf,
        index: usize,
        subject: String,
        not_after: String,
    },
    #[error("{path}: certificate #{index} (subject {subject}) is not valid before {not_before}")]
    NotYetValid {
        path: PathBuf,
        index: usize,
        subject: String,
        not_before: String,
    },
}
