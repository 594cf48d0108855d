//! The Secret's content: encoding [`Material`] into a `kubernetes.io/tls` Secret and
//! reading it back with every key checked.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rcgen::KeyPair;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use super::{
    CaCert, MANAGED_BY, MANAGED_BY_LABEL, MaterialError, Problem, ROLLOVER_ANNOTATION, Settings,
};
use crate::{
    CA_CERT_FILE, CA_KEY_FILE, Ca, GenerateError, LoadedPair, Pem, TLS_CERT_FILE, TLS_KEY_FILE,
    parse_pair, rfc3339,
};

/// What the Secret holds.
#[derive(Clone, Debug)]
pub struct Material {
    /// Oldest first.
    pub cas: Vec<CaCert>,
    pub leaf: Pem,
    /// [`ROLLOVER_ANNOTATION`].
    pub rollover_at: Option<OffsetDateTime>,
}

/// [`Material`] checked, with what the decisions need to know about the serving certificate.
#[derive(Debug)]
pub struct Parsed {
    pub material: Material,
    pub pair: LoadedPair,
    /// Index in `material.cas` of the CA that signed the serving certificate.
    pub leaf_issuer: Option<usize>,
    pub leaf_dns: Vec<String>,
    pub leaf_ips: Vec<IpAddr>,
}

impl Material {
    /// A new CA and a serving certificate signed by it.
    pub fn fresh(settings: &Settings, now: OffsetDateTime) -> Result<Self, GenerateError> {
        let ca = CaCert::generate(now, settings.ca_lifetime)?;
        let leaf = ca.issue(settings, &settings.dns_names, &settings.ip_addresses, now)?;
        Ok(Self {
            cas: vec![ca],
            leaf,
            rollover_at: None,
        })
    }

    /// `ca.crt`: the CA certificates, oldest first (the caBundle).
    pub fn ca_bundle_pem(&self) -> String {
        self.cas.iter().map(|c| c.pem().cert.as_str()).collect()
    }

    /// The `data` of the Secret.
    pub fn secret_data(&self) -> BTreeMap<String, ByteString> {
        let keys: String = self.cas.iter().map(|c| c.pem().key.as_str()).collect();
        BTreeMap::from([
            (
                CA_CERT_FILE.into(),
                ByteString(self.ca_bundle_pem().into_bytes()),
            ),
            (CA_KEY_FILE.into(), ByteString(keys.into_bytes())),
            (
                TLS_CERT_FILE.into(),
                ByteString(self.leaf.cert.clone().into_bytes()),
            ),
            (
                TLS_KEY_FILE.into(),
                ByteString(self.leaf.key.clone().into_bytes()),
            ),
        ])
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        self.rollover_at
            .map(|t| BTreeMap::from([(ROLLOVER_ANNOTATION.to_owned(), rfc3339(t))]))
            .unwrap_or_default()
    }

    /// A new Secret holding this material.
    pub fn to_secret(&self, settings: &Settings) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(settings.secret_name.clone()),
                namespace: Some(settings.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_owned(),
                    MANAGED_BY.to_owned(),
                )])),
                annotations: Some(self.annotations()),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(self.secret_data()),
            ..Secret::default()
        }
    }

    /// `secret` (as read, resourceVersion included) with this material: the body of the
    /// compare-and-swap update.
    pub fn apply_to(&self, secret: &Secret) -> Secret {
        let mut updated = secret.clone();
        let mut annotations = updated.metadata.annotations.take().unwrap_or_default();
        annotations.remove(ROLLOVER_ANNOTATION);
        annotations.extend(self.annotations());
        updated.metadata.annotations = Some(annotations);
        let mut data = updated.data.take().unwrap_or_default();
        data.extend(self.secret_data());
        updated.data = Some(data);
        updated
    }

    /// Reads and checks the Secret: every CA with its key, the serving certificate with its
    /// key. Validity in time is not checked here (renewing is the webhook's job).
    pub fn parse(secret: &Secret, label: &str) -> Result<Parsed, MaterialError> {
        let err = |problem: Problem| MaterialError {
            secret: label.to_owned(),
            problem,
        };
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let get = |key: &'static str| {
            data.get(key)
                .map(|b| b.0.as_slice())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| err(Problem::Missing { key }))
        };
        let ca_certs = CertificateDer::pem_slice_iter(get(CA_CERT_FILE)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                err(Problem::MalformedPem {
                    key: CA_CERT_FILE,
                    error,
                })
            })?;
        let ca_keys = PrivateKeyDer::pem_slice_iter(get(CA_KEY_FILE)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| {
                err(Problem::MalformedPem {
                    key: CA_KEY_FILE,
                    error,
                })
            })?;
        if ca_certs.is_empty() || ca_certs.len() != ca_keys.len() {
            return Err(err(Problem::Unpaired {
                certificates: ca_certs.len(),
                keys: ca_keys.len(),
            }));
        }
        let mut cas = Vec::with_capacity(ca_certs.len());
        for (index, (der, key)) in ca_certs.iter().zip(&ca_keys).enumerate() {
            let key =
                KeyPair::try_from(key).map_err(|error| err(Problem::CaKey { index, error }))?;
            let ca =
                Ca::from_der(der, key).map_err(|error| err(Problem::CaPair { index, error }))?;
            cas.push(CaCert::new(ca).map_err(|error| err(Problem::Ca { error }))?);
        }

        let leaf_cert = get(TLS_CERT_FILE)?;
        let leaf_key = get(TLS_KEY_FILE)?;
        let pair = parse_pair(
            leaf_cert,
            leaf_key,
            std::path::Path::new(TLS_CERT_FILE),
            std::path::Path::new(TLS_KEY_FILE),
        )
        .map_err(|error| err(Problem::Leaf(error)))?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&pair.chain[0]).map_err(|error| {
            err(Problem::LeafCertificate {
                error: error.into(),
            })
        })?;
        let leaf_issuer = cas.iter().position(|ca| {
            x509_parser::parse_x509_certificate(&ca.der)
                .is_ok_and(|(_, ca)| leaf.verify_signature(Some(ca.public_key())).is_ok())
        });
        let (leaf_dns, leaf_ips) = sans(&leaf);
        let rollover_at = secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ROLLOVER_ANNOTATION))
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        Ok(Parsed {
            material: Material {
                cas,
                leaf: Pem {
                    cert: text(leaf_cert),
                    key: text(leaf_key),
                },
                rollover_at,
            },
            pair,
            leaf_issuer,
            leaf_dns,
            leaf_ips,
        })
    }
}

fn sans(cert: &x509_parser::certificate::X509Certificate<'_>) -> (Vec<String>, Vec<IpAddr>) {
    use x509_parser::extensions::GeneralName;
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(n) => dns.push((*n).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (dns, ips)
}

/// True when the Secret holds none of the four keys (or only empty values).
pub(super) fn is_blank(secret: &Secret) -> bool {
    let data = secret.data.as_ref();
    [CA_CERT_FILE, CA_KEY_FILE, TLS_CERT_FILE, TLS_KEY_FILE]
        .iter()
        .all(|k| data.and_then(|d| d.get(*k)).is_none_or(|v| v.0.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfmanaged::test_support::{parse, settings};
    use crate::selfmanaged::{Problem, plan};

    #[test]
    fn fresh_material_round_trips_through_the_secret() {
        let s = settings(30, 60);
        let m = Material::fresh(&s, OffsetDateTime::now_utc()).unwrap();
        let p = parse(&m, &s);
        assert_eq!(p.material.cas.len(), 1);
        assert_eq!(p.leaf_issuer, Some(0));
        assert_eq!(p.leaf_dns, s.dns_names);
        assert_eq!(p.leaf_ips, s.ip_addresses);
        let secret = m.to_secret(&s);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert!(
            plan(&p, &s, OffsetDateTime::now_utc(), true)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn broken_secrets_are_refused_with_the_key_named() {
        let s = settings(30, 60);
        let now = OffsetDateTime::now_utc();
        let a = Material::fresh(&s, now).unwrap();
        let b = Material::fresh(&s, now).unwrap();
        let label = "Secret wi-system/wi-webhook-tls";
        let with = |key: &str, value: &str| {
            let mut secret = a.to_secret(&s);
            secret
                .data
                .as_mut()
                .unwrap()
                .insert(key.into(), ByteString(value.as_bytes().to_vec()));
            Material::parse(&secret, label).unwrap_err().to_string()
        };
        let e = with(TLS_KEY_FILE, &b.leaf.key);
        assert!(e.contains("tls.key") && e.contains("does not match"), "{e}");
        assert!(
            e.starts_with(label) && e.contains("delete the Secret"),
            "{e}"
        );
        let e = with(CA_KEY_FILE, &b.cas[0].pem().key);
        assert!(e.contains("ca.key") && e.contains("does not match"), "{e}");
        let e = with(CA_KEY_FILE, "");
        assert!(e.contains("no ca.key"), "{e}");
        let e = with(TLS_CERT_FILE, "garbage");
        assert!(e.contains("tls.crt"), "{e}");
        let two = format!("{}{}", a.cas[0].pem().cert, b.cas[0].pem().cert);
        let e = with(CA_CERT_FILE, &two);
        assert_eq!(
            e,
            format!(
                "{label}: ca.crt holds 2 certificate(s) and ca.key 1 key(s); they must pair up, \
                 in the same order; fix it, or delete the Secret to have a new CA and certificate \
                 created (the caBundle is rewritten)"
            )
        );
        // The cause is kept, typed.
        let mut secret = a.to_secret(&s);
        secret.data.as_mut().unwrap().insert(
            TLS_KEY_FILE.into(),
            ByteString(b.leaf.key.clone().into_bytes()),
        );
        let e = Material::parse(&secret, label).unwrap_err();
        assert!(
            matches!(
                e.problem,
                Problem::Leaf(crate::LoadError::KeyMismatch { .. })
            ),
            "{e}"
        );

        // A leaf from another CA parses (the plan re-issues it).
        let mut secret = a.to_secret(&s);
        let data = secret.data.as_mut().unwrap();
        data.insert(
            TLS_CERT_FILE.into(),
            ByteString(b.leaf.cert.clone().into_bytes()),
        );
        data.insert(
            TLS_KEY_FILE.into(),
            ByteString(b.leaf.key.clone().into_bytes()),
        );
        let p = Material::parse(&secret, label).unwrap();
        assert_eq!(p.leaf_issuer, None);
        let plan = plan(&p, &s, now, true).unwrap().expect("re-issue");
        assert_eq!(parse(&plan.material, &s).leaf_issuer, Some(0));
    }

    #[test]
    fn only_a_secret_without_any_certificate_is_blank() {
        let s = settings(30, 60);
        let mut secret = Material::fresh(&s, OffsetDateTime::now_utc())
            .unwrap()
            .to_secret(&s);
        assert!(!is_blank(&secret));
        let data = secret.data.as_mut().unwrap();
        data.insert(TLS_CERT_FILE.into(), ByteString(Vec::new()));
        assert!(!is_blank(&secret), "half empty is broken, not blank");
        secret.data = Some(BTreeMap::from([
            (TLS_CERT_FILE.into(), ByteString(Vec::new())),
            ("other".into(), ByteString(b"x".to_vec())),
        ]));
        assert!(is_blank(&secret));
        secret.data = None;
        assert!(is_blank(&secret));
    }
}
