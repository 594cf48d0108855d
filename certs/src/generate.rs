//! A new CA and serving certificate in one call (`wi-webhook certs generate`, the test
//! control plane), and the token-signing key of the test API server.

use std::net::IpAddr;
use std::path::Path;

use rcgen::KeyPair;
use time::{Duration, OffsetDateTime};

use crate::{
    CA_CERT_FILE, CA_KEY_FILE, Ca, DEFAULT_CA_DAYS, DEFAULT_DAYS, GenerateError, Pem,
    TLS_CERT_FILE, TLS_KEY_FILE, ca_bundle, write_pair,
};

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

#[cfg(test)]
mod tests {
    use std::fs;

    use base64::Engine as _;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::test_support::{opts, tmpdir};
    use crate::{CA_COMMON_NAME, TLS_KEY_FILE, load_pair};

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
    fn signing_key_is_pem() {
        let (private, public) = generate_signing_key().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
