//! The CA: generated or reloaded from PEM, and the serving and client certificates it signs.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use crate::{CA_CERT_FILE, CA_COMMON_NAME, CA_KEY_FILE, GenerateError, pem_encode};

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A CA able to sign more certificates (the test tooling signs client certs with it; the
/// self-managed mode re-issues serving certificates with it).
pub struct Ca {
    pub(crate) pem: Pem,
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
            .map_err(|e| GenerateError::BadCertificate(e.into()))?;
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
            .map_err(|e| GenerateError::BadCertificate(e.into()))?;
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

fn dn(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}
