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

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

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
    #[error("not a certificate: {0}")]
    BadCertificate(String),
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

/// Inputs of [`generate`].
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// DNS subject alternative names of the serving certificate.
    pub dns_names: Vec<String>,
    /// IP subject alternative names of the serving certificate.
    pub ip_addresses: Vec<IpAddr>,
    /// Lifetime of the serving certificate, from `not_before`.
    pub days: u32,
    /// Lifetime of the CA, from `not_before`.
    pub ca_days: u32,
    /// Start of validity; [`default_not_before`] by default.
    pub not_before: OffsetDateTime,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            days: DEFAULT_DAYS,
            ca_days: DEFAULT_CA_DAYS,
            not_before: default_not_before(),
        }
    }
}

/// Start of validity of a new certificate: one hour ago, so a peer whose clock is a little
/// behind does not reject a certificate made a moment ago.
pub fn default_not_before() -> OffsetDateTime {
    OffsetDateTime::now_utc() - Duration::hours(1)
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// Output of [`generate`]: the CA and the serving certificate it signed.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub ca: Pem,
    pub serving: Pem,
}

impl Bundle {
    /// base64 of the CA certificate PEM: the `caBundle` of a webhook configuration.
    pub fn ca_bundle(&self) -> String {
        ca_bundle(&self.ca.cert)
    }

    /// Writes `ca.crt`, `ca.key`, `tls.crt` and `tls.key` into `dir` (created if missing).
    /// Key files are mode 0600.
    pub fn write_dir(&self, dir: &Path) -> Result<(), GenerateError> {
        write_pair(dir, CA_CERT_FILE, CA_KEY_FILE, &self.ca)?;
        write_pair(dir, TLS_CERT_FILE, TLS_KEY_FILE, &self.serving)
    }
}

/// A CA able to sign more certificates (the test tooling signs client certs with it; the
/// self-managed mode re-issues serving certificates with it).
pub struct Ca {
    pem: Pem,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Ca").field("cert", &self.pem.cert).finish()
    }
}

impl Ca {
    /// A new self-signed CA, CN [`CA_COMMON_NAME`], valid `days` from `not_before`.
    pub fn generate(not_before: OffsetDateTime, days: u32) -> Result<Self, GenerateError> {
        Self::generate_until(not_before, not_before + Duration::days(i64::from(days)))
    }

    /// A new self-signed CA valid from `not_before` to `not_after`.
    pub fn generate_until(
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self, GenerateError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(CA_COMMON_NAME, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.self_signed(&key)?;
        let pem = Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        };
        Ok(Self {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its PEM certificate and key (for example `ca.crt` and `ca.key`).
    /// Fails with [`GenerateError::CaKeyMismatch`] when the key is not the certificate's.
    pub fn from_pem(cert: &str, key: &str) -> Result<Self, GenerateError> {
        let key_pair = KeyPair::from_pem(key)?;
        let der = CertificateDer::from_pem_slice(cert.as_bytes())
            .map_err(|e| GenerateError::BadCertificate(e.to_string()))?;
        let mut ca = Self::from_der(&der, key_pair)?;
        // Keep the PEM as given (comments, a chain after the CA).
        ca.pem = Pem {
            cert: cert.to_owned(),
            key: key.to_owned(),
        };
        Ok(ca)
    }

    /// A CA from its DER certificate and its key pair; checks that they match.
    pub fn from_der(cert: &CertificateDer<'_>, key: KeyPair) -> Result<Self, GenerateError> {
        use rcgen::PublicKeyData as _;
        let (_, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| GenerateError::BadCertificate(e.to_string()))?;
        if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(GenerateError::CaKeyMismatch);
        }
        let pem = Pem {
            cert: pem_encode("CERTIFICATE", cert),
            key: key.serialize_pem(),
        };
        let issuer = Issuer::from_ca_cert_der(cert, key)?;
        Ok(Self { pem, issuer })
    }

    /// Reads `ca.crt` and `ca.key` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, GenerateError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|error| GenerateError::Read { path, error })
        };
        Self::from_pem(&read(CA_CERT_FILE)?, &read(CA_KEY_FILE)?)
    }

    pub fn pem(&self) -> &Pem {
        &self.pem
    }

    /// A serving certificate for the given names (serverAuth and clientAuth, so the same
    /// certificate can also authenticate the server to a peer).
    pub fn issue_serving(
        &self,
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        not_before: OffsetDateTime,
        days: u32,
    ) -> Result<Pem, GenerateError> {
        let not_after = not_before + Duration::days(i64::from(days));
        self.issue_serving_until(dns_names, ip_addresses, not_before, not_after)
    }

    /// [`Ca::issue_serving`] valid from `not_before` to `not_after`.
    pub fn issue_serving_until(
        &self,
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Pem, GenerateError> {
        let mut params = CertificateParams::default();
        let cn = dns_names
            .first()
            .cloned()
            .or_else(|| ip_addresses.first().map(|ip| ip.to_string()))
            .unwrap_or_else(|| "wi-webhook".to_owned());
        params.distinguished_name = dn(&cn, None);
        params.subject_alt_names = dns_names
            .iter()
            .map(|name| Ok(SanType::DnsName(name.clone().try_into()?)))
            .chain(ip_addresses.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<Result<_, rcgen::Error>>()?;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(params, not_before, not_after)
    }

    /// A client certificate. Kubernetes reads the user from CN and the groups from O, so
    /// `issue_client("admin", Some("system:masters"), ..)` is a cluster admin.
    pub fn issue_client(
        &self,
        common_name: &str,
        organization: Option<&str>,
        not_before: OffsetDateTime,
        days: u32,
    ) -> Result<Pem, GenerateError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name, organization);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(
            params,
            not_before,
            not_before + Duration::days(i64::from(days)),
        )
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Pem, GenerateError> {
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// A new CA and a serving certificate signed by it.
pub fn generate(opts: &GenerateOptions) -> Result<Bundle, GenerateError> {
    let ca = Ca::generate(opts.not_before, opts.ca_days)?;
    let serving = ca.issue_serving(
        &opts.dns_names,
        &opts.ip_addresses,
        opts.not_before,
        opts.days,
    )?;
    Ok(Bundle {
        ca: ca.pem,
        serving,
    })
}

/// An ECDSA P-256 key pair for signing tokens (the API server's service-account key):
/// `(private key PEM (PKCS#8), public key PEM (SPKI))`.
pub fn generate_signing_key() -> Result<(String, String), GenerateError> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

/// PEM of a DER object: `-----BEGIN <label>-----`, base64 in lines of 64, `-----END ...`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// base64 of a PEM certificate: the form of `caBundle` in webhook configurations.
pub fn ca_bundle(ca_cert_pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(ca_cert_pem)
}

/// Writes `pem.cert` to `dir/cert_name` (0644) and `pem.key` to `dir/key_name` (0600).
pub fn write_pair(
    dir: &Path,
    cert_name: &str,
    key_name: &str,
    pem: &Pem,
) -> Result<(), GenerateError> {
    fs::create_dir_all(dir).map_err(|error| GenerateError::Write {
        path: dir.to_owned(),
        error,
    })?;
    write_file(&dir.join(cert_name), &pem.cert, 0o644)?;
    write_file(&dir.join(key_name), &pem.key, 0o600)
}

/// Writes a file with the given mode. The mode is set at creation (no window in which a
/// private key is readable by others) and again afterwards, since an existing file keeps
/// its old mode on open.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), GenerateError> {
    let err = |error| GenerateError::Write {
        path: path.to_owned(),
        error,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(mode);
        let mut file = options.open(path).map_err(err)?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err)?;
        file.write_all(contents.as_bytes()).map_err(err)?;
    }
    #[cfg(not(unix))]
    {
        let _ = mode;
        let mut file = options.open(path).map_err(err)?;
        file.write_all(contents.as_bytes()).map_err(err)?;
    }
    Ok(())
}

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

/// Serial number of a DER certificate as lowercase hex (empty if it does not parse).
pub fn serial_hex(der: &[u8]) -> String {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| {
            cert.raw_serial()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default()
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

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// RFC 3339 form of a time, for messages and annotations.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wi-certs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn opts() -> GenerateOptions {
        GenerateOptions {
            dns_names: vec!["wi-webhook.wi-system.svc".into(), "localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            ..Default::default()
        }
    }

    #[test]
    fn generate_then_load_round_trip() {
        let dir = tmpdir("roundtrip");
        let bundle = generate(&opts()).unwrap();
        bundle.write_dir(&dir).unwrap();
        let pair = load_pair(&dir.join(TLS_CERT_FILE), &dir.join(TLS_KEY_FILE)).unwrap();
        assert_eq!(pair.chain.len(), 1);
        let days_left = (pair.not_after - OffsetDateTime::now_utc()).whole_days();
        assert!((363..=365).contains(&days_left), "{days_left}");

        // The leaf is signed by the CA, has the SANs and serverAuth, and the CA is a CA.
        let (_, leaf) = x509_parser::parse_x509_certificate(&pair.chain[0]).unwrap();
        let ca_der = CertificateDer::from_pem_slice(bundle.ca.cert.as_bytes()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert!(ca.is_ca());
        assert!(ca.subject().to_string().contains(CA_COMMON_NAME));
        assert_eq!(leaf.issuer(), ca.subject());
        leaf.verify_signature(Some(ca.public_key())).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(
            names.iter().any(|n| n.contains("wi-webhook.wi-system.svc")),
            "{names:?}"
        );
        assert!(
            names.contains(&"IPAddress(7f:00:00:01)".to_owned()),
            "{names:?}"
        );
        let eku = leaf.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);

        // The caBundle decodes to the CA PEM.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(bundle.ca_bundle())
            .unwrap();
        assert_eq!(decoded, bundle.ca.cert.as_bytes());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn client_cert_carries_cn_and_org_and_ca_reloads_from_dir() {
        let dir = tmpdir("client");
        generate(&opts()).unwrap().write_dir(&dir).unwrap();
        let ca = Ca::from_dir(&dir).unwrap();
        let client = ca
            .issue_client(
                "admin",
                Some("system:masters"),
                OffsetDateTime::now_utc(),
                1,
            )
            .unwrap();
        let der = CertificateDer::from_pem_slice(client.cert.as_bytes()).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let subject = cert.subject().to_string();
        assert!(
            subject.contains("CN=admin") && subject.contains("O=system:masters"),
            "{subject}"
        );
        let ca_der = CertificateDer::from_pem_slice(ca.pem().cert.as_bytes()).unwrap();
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        cert.verify_signature(Some(ca_cert.public_key())).unwrap();
        fs::remove_dir_all(dir).unwrap();
    }

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

    #[cfg(unix)]
    #[test]
    fn key_files_are_0600_even_when_they_existed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmpdir("modes");
        // A pre-existing world-readable key file must not keep its mode.
        write_file(&dir.join(TLS_KEY_FILE), "old", 0o644).unwrap();
        generate(&opts()).unwrap().write_dir(&dir).unwrap();
        let mode = |name: &str| fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(TLS_KEY_FILE), 0o600);
        assert_eq!(mode(CA_KEY_FILE), 0o600);
        assert_eq!(mode(TLS_CERT_FILE), 0o644);
        assert_eq!(mode(CA_CERT_FILE), 0o644);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn signing_key_is_pem() {
        let (private, public) = generate_signing_key().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
