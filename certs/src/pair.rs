//! The checks `serve` runs before it accepts a certificate/key pair: both present and
//! parseable, the key the leaf's, every certificate of the chain valid now.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::{LoadError, expiry, rfc3339, serial_hex};

/// A checked certificate chain and key, ready for rustls.
#[derive(Debug)]
pub struct LoadedPair {
    /// The chain as found in the certificate file, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// Chain and signing key, already checked to match (for a `ResolvesServerCert`).
    pub certified_key: Arc<rustls::sign::CertifiedKey>,
    /// Earliest notAfter of the chain: when the pair stops working.
    pub not_after: OffsetDateTime,
    /// Where the chain came from (a path, or `Secret <ns>/<name> tls.crt`), for messages.
    cert_path: PathBuf,
    /// Validity and subject of each certificate of the chain.
    validities: Vec<(expiry::Validity, String)>,
}

impl LoadedPair {
    /// Validity of the leaf (the first certificate).
    pub fn leaf_validity(&self) -> expiry::Validity {
        self.validities[0].0
    }

    /// Serial number of the leaf, as lowercase hex without separators.
    pub fn serial(&self) -> String {
        serial_hex(&self.chain[0])
    }

    /// Subject of the leaf.
    pub fn subject(&self) -> &str {
        &self.validities[0].1
    }

    /// Fails when a certificate of the chain is expired or not yet valid at `now`.
    pub fn check_time(&self, now: OffsetDateTime) -> Result<(), LoadError> {
        for (index, (validity, subject)) in self.validities.iter().enumerate() {
            if now > validity.not_after {
                return Err(LoadError::Expired {
                    path: self.cert_path.clone(),
                    index,
                    subject: subject.clone(),
                    not_after: rfc3339(validity.not_after),
                });
            }
            if now < validity.not_before {
                return Err(LoadError::NotYetValid {
                    path: self.cert_path.clone(),
                    index,
                    subject: subject.clone(),
                    not_before: rfc3339(validity.not_before),
                });
            }
        }
        Ok(())
    }
}

/// Reads a PEM certificate chain and a PEM private key, and checks that they can serve:
/// both present, the key matches the leaf, and no certificate of the chain is expired or not
/// yet valid.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedPair, LoadError> {
    load_pair_at(cert_path, key_path, OffsetDateTime::now_utc())
}

/// [`load_pair`] with an explicit "now" (tests, and "will this still be valid in N days").
pub fn load_pair_at(
    cert_path: &Path,
    key_path: &Path,
    now: OffsetDateTime,
) -> Result<LoadedPair, LoadError> {
    let read = |path: &Path| {
        fs::read(path).map_err(|error| LoadError::Unreadable {
            path: path.to_owned(),
            error,
        })
    };
    let cert_bytes = read(cert_path)?;
    let key_bytes = read(key_path)?;
    let pair = parse_pair(&cert_bytes, &key_bytes, cert_path, key_path)?;
    pair.check_time(now)?;
    Ok(pair)
}

/// Parses a PEM certificate chain and a PEM private key and checks that the key matches the
/// leaf, without looking at the clock (see [`LoadedPair::check_time`]). The paths only name
/// the inputs in errors.
pub fn parse_pair(
    cert_bytes: &[u8],
    key_bytes: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<LoadedPair, LoadError> {
    let malformed = |path: &Path, e: &dyn std::fmt::Display| LoadError::Malformed {
        path: path.to_owned(),
        reason: e.to_string(),
    };

    let chain = CertificateDer::pem_slice_iter(cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(cert_path, &e))?;
    if chain.is_empty() {
        return Err(LoadError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }

    let key = match PrivateKeyDer::from_pem_slice(key_bytes) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(LoadError::NoKey {
                path: key_path.to_owned(),
            });
        }
        Err(e) => return Err(malformed(key_path, &e)),
    };

    // Validity of every certificate in the file: an expired intermediate breaks clients too.
    let mut validities = Vec::with_capacity(chain.len());
    for der in &chain {
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| malformed(cert_path, &e))?;
        validities.push((expiry::Validity::of_x509(&cert), cert.subject().to_string()));
    }

    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        LoadError::UnsupportedKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let certified_key = rustls::sign::CertifiedKey::new(chain.clone(), signing_key);
    // ring's keys all expose their public key, so "unknown" cannot hide a mismatch here.
    if certified_key.keys_match().is_err() {
        return Err(LoadError::KeyMismatch {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        });
    }

    let not_after = validities
        .iter()
        .map(|(v, _)| v.not_after)
        .min()
        .expect("chain is not empty");
    Ok(LoadedPair {
        chain,
        key,
        certified_key: Arc::new(certified_key),
        not_after,
        cert_path: cert_path.to_owned(),
        validities,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use time::Duration;

    use super::*;
    use crate::test_support::{opts, tmpdir};
    use crate::{GenerateOptions, TLS_CERT_FILE, TLS_KEY_FILE, generate, write_file};

    #[test]
    fn mismatched_pair_is_refused() {
        let dir = tmpdir("mismatch");
        let a = generate(&opts()).unwrap();
        let b = generate(&opts()).unwrap();
        write_file(&dir.join("tls.crt"), &a.serving.cert, 0o644).unwrap();
        write_file(&dir.join("tls.key"), &b.serving.key, 0o600).unwrap();
        let err = load_pair(&dir.join("tls.crt"), &dir.join("tls.key")).unwrap_err();
        assert!(matches!(err, LoadError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("tls.key"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn expired_cert_is_refused_with_its_date() {
        let dir = tmpdir("expired");
        let bundle = generate(&GenerateOptions {
            not_before: OffsetDateTime::now_utc() - Duration::days(10),
            days: 1,
            ..opts()
        })
        .unwrap();
        bundle.write_dir(&dir).unwrap();
        let err = load_pair(&dir.join(TLS_CERT_FILE), &dir.join(TLS_KEY_FILE)).unwrap_err();
        let LoadError::Expired { not_after, .. } = &err else {
            panic!("expected Expired, got {err}");
        };
        let expected = (OffsetDateTime::now_utc() - Duration::days(9))
            .date()
            .to_string();
        assert!(
            not_after.starts_with(&expected),
            "{not_after} vs {expected}"
        );
        assert!(err.to_string().contains("tls.crt"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn not_yet_valid_cert_is_refused() {
        let dir = tmpdir("future");
        generate(&GenerateOptions {
            not_before: OffsetDateTime::now_utc() + Duration::days(2),
            ..opts()
        })
        .unwrap()
        .write_dir(&dir)
        .unwrap();
        let err = load_pair(&dir.join(TLS_CERT_FILE), &dir.join(TLS_KEY_FILE)).unwrap_err();
        assert!(matches!(err, LoadError::NotYetValid { .. }), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tmpdir("missing");
        let bundle = generate(&opts()).unwrap();
        bundle.write_dir(&dir).unwrap();
        let cert = dir.join(TLS_CERT_FILE);
        let key = dir.join(TLS_KEY_FILE);

        let err = load_pair(&dir.join("nope.crt"), &key).unwrap_err();
        assert!(
            matches!(err, LoadError::Unreadable { .. }) && err.to_string().contains("nope.crt")
        );

        // A key file given as the certificate: no certificate in it.
        let err = load_pair(&key, &key).unwrap_err();
        assert!(matches!(err, LoadError::NoCertificate { .. }), "{err}");

        // A certificate given as the key: no key in it.
        let err = load_pair(&cert, &cert).unwrap_err();
        assert!(matches!(err, LoadError::NoKey { .. }), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }
}
