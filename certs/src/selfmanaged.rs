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

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use rcgen::KeyPair;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use crate::expiry::{Validity, format_duration, issue_window, to_std, to_time};
use crate::files::OnLoad;
use crate::{
    CA_CERT_FILE, CA_KEY_FILE, Ca, GenerateError, LoadedPair, Pem, TLS_CERT_FILE, TLS_KEY_FILE,
    parse_pair, rfc3339, serial_hex,
};

/// Annotation of the Secret: when the last CA rollover step happened (RFC 3339). Present only
/// while `ca.crt` holds two CAs.
pub const ROLLOVER_ANNOTATION: &str = "wi-webhook.dev/ca-rollover-step-at";
/// Label of the Secret.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "wi-webhook";

/// Longest CA rollover overlap.
pub const MAX_OVERLAP: StdDuration = StdDuration::from_secs(7 * 86_400);

/// What the self-managed mode needs to know.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the Secret (the webhook's own).
    pub namespace: String,
    pub secret_name: String,
    /// Name of the Mutating (and, if it exists, Validating) webhook configuration whose
    /// caBundle the webhook writes.
    pub webhook_config_name: String,
    /// Subject alternative names of the serving certificate.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub cert_lifetime: StdDuration,
    pub ca_lifetime: StdDuration,
    /// How often the Secret and the webhook configurations are read.
    pub interval: StdDuration,
}

impl Settings {
    /// The DNS names of a Service: `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` and
    /// `<svc>.<ns>.svc.cluster.local`, then `extra` (duplicates dropped).
    pub fn service_dns_names(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
        let mut names = vec![
            format!("{service}.{namespace}.svc"),
            service.to_owned(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        for name in extra {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// How long each CA rollover step waits for the previous one to reach every API server
    /// and every replica: a twelfth of the CA lifetime, at most [`MAX_OVERLAP`].
    pub fn overlap(&self) -> StdDuration {
        (self.ca_lifetime / 12).min(MAX_OVERLAP)
    }

    /// Refuses lifetimes the rotation cannot keep up with.
    pub fn validate(&self) -> Result<(), String> {
        let f = format_duration;
        if self.dns_names.is_empty() && self.ip_addresses.is_empty() {
            return Err("the serving certificate needs at least one DNS name or IP".into());
        }
        if self.cert_lifetime < self.interval * 6 {
            return Err(format!(
                "--cert-lifetime {} is too short for --cert-reload-interval {}: give at least six \
                 reload intervals, so that a renewal (due when a third of the lifetime is left) \
                 is seen by every replica well before the certificate expires",
                f(self.cert_lifetime),
                f(self.interval)
            ));
        }
        if self.ca_lifetime < self.cert_lifetime * 2 {
            return Err(format!(
                "--ca-lifetime {} must be at least twice --cert-lifetime {}",
                f(self.ca_lifetime),
                f(self.cert_lifetime)
            ));
        }
        if self.overlap() < self.interval * 3 {
            return Err(format!(
                "--ca-lifetime {} is too short for --cert-reload-interval {}: a CA rollover waits \
                 a twelfth of the CA lifetime ({}) between steps, which must be at least three \
                 reload intervals",
                f(self.ca_lifetime),
                f(self.interval),
                f(self.overlap())
            ));
        }
        Ok(())
    }

    fn secret_label(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.secret_name)
    }
}

/// A CA of the Secret, with its key.
#[derive(Clone)]
pub struct CaCert {
    ca: Arc<Ca>,
    der: CertificateDer<'static>,
    pub validity: Validity,
}

impl std::fmt::Debug for CaCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCert")
            .field("serial", &self.serial())
            .field("validity", &self.validity)
            .finish()
    }
}

impl CaCert {
    fn new(ca: Ca) -> Result<Self, GenerateError> {
        let der = CertificateDer::from_pem_slice(ca.pem().cert.as_bytes())
            .map_err(|e| GenerateError::BadCertificate(e.to_string()))?
            .into_owned();
        let validity = Validity::of_der(&der).map_err(GenerateError::BadCertificate)?;
        Ok(Self {
            ca: Arc::new(ca),
            der,
            validity,
        })
    }

    fn generate(now: OffsetDateTime, lifetime: StdDuration) -> Result<Self, GenerateError> {
        let window = issue_window(now, lifetime, None);
        Self::new(Ca::generate_until(window.not_before, window.not_after)?)
    }

    pub fn serial(&self) -> String {
        serial_hex(&self.der)
    }

    pub fn pem(&self) -> &Pem {
        self.ca.pem()
    }

    fn issue(
        &self,
        settings: &Settings,
        dns: &[String],
        ips: &[IpAddr],
        now: OffsetDateTime,
    ) -> Result<Pem, GenerateError> {
        let window = issue_window(now, settings.cert_lifetime, Some(self.validity.not_after));
        let not_before = window.not_before.max(self.validity.not_before);
        self.ca
            .issue_serving_until(dns, ips, not_before, window.not_after)
    }
}

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

/// Why the Secret cannot be used. Every message names the Secret and the key.
#[derive(Debug, thiserror::Error)]
#[error(
    "{secret}: {problem}; fix it, or delete the Secret to have a new CA and certificate created (the caBundle is rewritten)"
)]
pub struct MaterialError {
    pub secret: String,
    pub problem: String,
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
        let err = |problem: String| MaterialError {
            secret: label.to_owned(),
            problem,
        };
        let empty = BTreeMap::new();
        let data = secret.data.as_ref().unwrap_or(&empty);
        let get = |key: &str| {
            data.get(key)
                .map(|b| b.0.as_slice())
                .filter(|b| !b.is_empty())
                .ok_or_else(|| err(format!("no {key}")))
        };
        let ca_certs = CertificateDer::pem_slice_iter(get(CA_CERT_FILE)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("{CA_CERT_FILE}: malformed PEM: {e}")))?;
        let ca_keys = PrivateKeyDer::pem_slice_iter(get(CA_KEY_FILE)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("{CA_KEY_FILE}: malformed PEM: {e}")))?;
        if ca_certs.is_empty() || ca_certs.len() != ca_keys.len() {
            return Err(err(format!(
                "{CA_CERT_FILE} holds {} certificate(s) and {CA_KEY_FILE} {} key(s); they must \
                 pair up, in the same order",
                ca_certs.len(),
                ca_keys.len()
            )));
        }
        let mut cas = Vec::with_capacity(ca_certs.len());
        for (index, (der, key)) in ca_certs.iter().zip(&ca_keys).enumerate() {
            let key = KeyPair::try_from(key)
                .map_err(|e| err(format!("{CA_KEY_FILE}: key #{index}: {e}")))?;
            let ca = Ca::from_der(der, key).map_err(|e| {
                err(format!(
                    "{CA_CERT_FILE} certificate #{index} and {CA_KEY_FILE} key #{index}: {e}"
                ))
            })?;
            cas.push(CaCert::new(ca).map_err(|e| err(format!("{CA_CERT_FILE}: {e}")))?);
        }

        let leaf_cert = get(TLS_CERT_FILE)?;
        let leaf_key = get(TLS_KEY_FILE)?;
        let pair = parse_pair(
            leaf_cert,
            leaf_key,
            std::path::Path::new(TLS_CERT_FILE),
            std::path::Path::new(TLS_KEY_FILE),
        )
        .map_err(|e| err(e.to_string()))?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&pair.chain[0])
            .map_err(|e| err(format!("{TLS_CERT_FILE}: {e}")))?;
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

/// A change to make to the Secret, and why.
#[derive(Debug)]
pub struct Plan {
    pub material: Material,
    pub reasons: Vec<String>,
}

/// What is due at `now`, if anything. `bundle_current` says that the webhook
/// configurations' caBundle already held the Secret's `ca.crt` before this round (it was
/// not just rewritten): a CA rollover only moves the serving certificate to the new CA then.
pub fn plan(
    current: &Parsed,
    settings: &Settings,
    now: OffsetDateTime,
    bundle_current: bool,
) -> Result<Option<Plan>, GenerateError> {
    let overlap = to_time(settings.overlap());
    let mut reasons = Vec::new();
    let old = &current.material;

    // CAs that expired can neither sign nor verify anything.
    let mut cas: Vec<CaCert> = old
        .cas
        .iter()
        .filter(|ca| !ca.validity.is_expired_at(now))
        .cloned()
        .collect();
    if cas.is_empty() {
        let material = Material::fresh(settings, now)?;
        reasons.push(format!(
            "every CA has expired (last at {}): new CA and serving certificate; the caBundle is rewritten",
            old.cas
                .iter()
                .map(|c| c.validity.not_after)
                .max()
                .map_or_else(String::new, rfc3339)
        ));
        return Ok(Some(Plan { material, reasons }));
    }
    if cas.len() < old.cas.len() {
        reasons.push("dropped an expired CA".into());
    }
    let leaf_issuer = current
        .leaf_issuer
        .map(|i| &old.cas[i])
        .and_then(|issuer| cas.iter().position(|ca| ca.der == issuer.der));
    let mut rollover_at = old.rollover_at;
    let mut signer: usize;
    let mut reissue: Option<String> = None;

    if cas.len() == 1 {
        rollover_at = None;
        signer = 0;
        if cas[0].validity.needs_renewal(now) {
            // Step 1 of a rollover: trust a new CA next to the old one.
            let new = CaCert::generate(now, settings.ca_lifetime)?;
            reasons.push(format!(
                "CA {} expires at {} (a third of its lifetime left): added CA {} to ca.crt; \
                 the serving certificate moves to it after {}",
                short(&cas[0].serial()),
                rfc3339(cas[0].validity.not_after),
                short(&new.serial()),
                format_duration(settings.overlap())
            ));
            cas.push(new);
            rollover_at = Some(now);
        }
    } else {
        let newest = cas.len() - 1;
        let since = match rollover_at {
            Some(t) => t,
            None => {
                reasons.push("CA rollover without its step time: overlap restarted".into());
                rollover_at = Some(now);
                now
            }
        };
        if leaf_issuer == Some(newest) {
            signer = newest;
            if now >= since + overlap {
                // Step 3: every replica serves a certificate of the new CA.
                reasons.push(format!(
                    "the serving certificate has been signed by CA {} for {}: dropped the older CA(s)",
                    short(&cas[newest].serial()),
                    format_duration(settings.overlap())
                ));
                cas.drain(..newest);
                signer = 0;
                rollover_at = None;
            }
        } else {
            signer = leaf_issuer.unwrap_or(0);
            if !bundle_current {
                // Someone rewrote the caBundle: the overlap counts from now.
                reasons.push("the caBundle did not hold every CA: overlap restarted".into());
                rollover_at = Some(now);
            } else if now >= since + overlap {
                // Step 2: the caBundle has trusted the new CA for an overlap.
                reissue = Some(format!(
                    "the caBundle has trusted CA {} for {}: serving certificate re-issued by it",
                    short(&cas[newest].serial()),
                    format_duration(settings.overlap())
                ));
                signer = newest;
                rollover_at = Some(now);
            }
        }
    }

    // The serving certificate itself.
    let leaf_validity = current.pair.leaf_validity();
    let missing: Vec<String> = settings
        .dns_names
        .iter()
        .filter(|n| !current.leaf_dns.contains(n))
        .cloned()
        .chain(
            settings
                .ip_addresses
                .iter()
                .filter(|ip| !current.leaf_ips.contains(ip))
                .map(IpAddr::to_string),
        )
        .collect();
    let mut dns = settings.dns_names.clone();
    let mut ips = settings.ip_addresses.clone();
    if reissue.is_none() {
        reissue = if leaf_issuer.is_none() {
            Some("the serving certificate is not signed by a CA of ca.crt: re-issued".into())
        } else if leaf_validity.is_expired_at(now) {
            Some(format!(
                "the serving certificate expired at {}: re-issued",
                rfc3339(leaf_validity.not_after)
            ))
        } else if leaf_validity.needs_renewal(now) {
            Some(format!(
                "the serving certificate expires at {} (a third of its lifetime left): renewed",
                rfc3339(leaf_validity.not_after)
            ))
        } else if !missing.is_empty() {
            // Another replica may run with other names (a rollout changing them): keep
            // theirs too, so that the two do not take turns re-issuing.
            for name in &current.leaf_dns {
                if !dns.contains(name) {
                    dns.push(name.clone());
                }
            }
            for ip in &current.leaf_ips {
                if !ips.contains(ip) {
                    ips.push(*ip);
                }
            }
            Some(format!(
                "the serving certificate lacks {}: re-issued",
                missing.join(", ")
            ))
        } else {
            None
        };
    }
    let leaf = match reissue {
        Some(reason) => {
            reasons.push(reason);
            cas[signer].issue(settings, &dns, &ips, now)?
        }
        None => old.leaf.clone(),
    };
    if reasons.is_empty() {
        return Ok(None);
    }
    Ok(Some(Plan {
        material: Material {
            cas,
            leaf,
            rollover_at,
        },
        reasons,
    }))
}

/// When [`plan`] may next have something to do (a lower bound for sleeping).
pub fn next_due(current: &Parsed, settings: &Settings) -> OffsetDateTime {
    let mut due = current.pair.leaf_validity().renew_at();
    if let Some(newest) = current.material.cas.last() {
        due = due.min(newest.validity.renew_at());
    }
    if let (true, Some(t)) = (current.material.cas.len() > 1, current.material.rollover_at) {
        due = due.min(t + to_time(settings.overlap()));
    }
    due
}

fn short(serial: &str) -> &str {
    &serial[..serial.len().min(16)]
}

/// The caBundle of the webhook configurations, after a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleState {
    /// Every webhook already held the CAs.
    Current,
    /// Some webhook did not; it was rewritten now.
    Rewritten,
    /// There is no MutatingWebhookConfiguration of that name.
    Missing,
}

/// True when `configured` (a caBundle) holds exactly the certificates of `desired` (PEM).
pub fn same_bundle(configured: Option<&ByteString>, desired: &[u8]) -> bool {
    let certs = |pem: &[u8]| {
        let mut v: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect();
        v.sort();
        v
    };
    configured.is_some_and(|b| certs(&b.0) == certs(desired))
}

/// Writes `desired` into the caBundle of every webhook of the configurations
/// `settings.webhook_config_name` (Mutating, and Validating if it exists), each with a
/// compare-and-swap update retried on conflict.
pub async fn sync_bundles(
    client: &kube::Client,
    name: &str,
    desired: &[u8],
) -> Result<BundleState, kube::Error> {
    let mutating = sync_one(
        &Api::<MutatingWebhookConfiguration>::all(client.clone()),
        name,
        desired,
        |c: &mut MutatingWebhookConfiguration| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config.ca_bundle)
                .collect()
        },
    )
    .await?;
    let validating = sync_one(
        &Api::<ValidatingWebhookConfiguration>::all(client.clone()),
        name,
        desired,
        |c: &mut ValidatingWebhookConfiguration| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config.ca_bundle)
                .collect()
        },
    )
    .await?;
    Ok(match (mutating, validating) {
        (BundleState::Missing, _) => BundleState::Missing,
        (BundleState::Rewritten, _) | (_, BundleState::Rewritten) => BundleState::Rewritten,
        _ => BundleState::Current,
    })
}

async fn sync_one<K>(
    api: &Api<K>,
    name: &str,
    desired: &[u8],
    bundles: impl Fn(&mut K) -> Vec<&mut Option<ByteString>>,
) -> Result<BundleState, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let mut attempt = 0;
    loop {
        let Some(mut config) = api.get_opt(name).await? else {
            return Ok(BundleState::Missing);
        };
        let mut fields = bundles(&mut config);
        if fields.iter().all(|b| same_bundle(b.as_ref(), desired)) {
            return Ok(BundleState::Current);
        }
        for field in &mut fields {
            **field = Some(ByteString(desired.to_vec()));
        }
        // The configuration as read carries its resourceVersion: a concurrent writer makes
        // this fail with 409, and the next round reads theirs.
        match api.replace(name, &PostParams::default(), &config).await {
            Ok(_) => return Ok(BundleState::Rewritten),
            Err(kube::Error::Api(status)) if status.is_conflict() && attempt < 5 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates the Secret holding `material` (new: [`Material::fresh`]). When it exists already
/// (another replica created it first: 409 AlreadyExists), reads that one instead, so that
/// replicas starting together all end up with the same certificate. Returns the Secret and
/// whether this call created it.
pub async fn create_or_read(
    secrets: &Api<Secret>,
    settings: &Settings,
    material: &Material,
) -> Result<(Secret, bool), kube::Error> {
    let label = settings.secret_label();
    match secrets
        .create(&PostParams::default(), &material.to_secret(settings))
        .await
    {
        Ok(created) => {
            tracing::info!(
                secret = %label,
                ca = %short(&material.cas[0].serial()),
                "created the self-managed CA and serving certificate"
            );
            Ok((created, true))
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            tracing::info!(secret = %label, "another replica created the Secret first; using theirs");
            // Deleted again in between: a NotFound error, and the next round creates it.
            secrets
                .get(&settings.secret_name)
                .await
                .map(|secret| (secret, false))
        }
        Err(e) => Err(e),
    }
}

/// How a compare-and-swap update of the Secret went.
enum Write {
    Written(Secret),
    /// Another replica wrote first: its Secret (`None`: deleted meanwhile).
    Lost(Option<Secret>),
    Failed(kube::Error),
}

/// True when the Secret holds none of the four keys (or only empty values).
fn is_blank(secret: &Secret) -> bool {
    let data = secret.data.as_ref();
    [CA_CERT_FILE, CA_KEY_FILE, TLS_CERT_FILE, TLS_KEY_FILE]
        .iter()
        .all(|k| data.and_then(|d| d.get(*k)).is_none_or(|v| v.0.is_empty()))
}

/// Errors of one round.
#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error("{0}")]
    Api(String),
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

/// The self-managed certificate of one replica.
pub struct Manager {
    client: kube::Client,
    settings: Settings,
    secrets: Api<Secret>,
    /// Unset during [`Manager::bootstrap`], whose pair the caller installs.
    on_load: Option<OnLoad>,
    ready: Arc<AtomicBool>,
    /// `tls.crt` and `tls.key` of the pair installed.
    served: Option<(Vec<u8>, Vec<u8>)>,
    last_state: Option<BundleState>,
    /// When the first round after bootstrap is due.
    due: OffsetDateTime,
}

impl Manager {
    /// Makes sure the Secret exists and is sound, writes the caBundle, and returns the
    /// serving certificate to start with. `ready` is false until [`Manager::spawn`]'s loop
    /// (or this first round) finds every caBundle holding the Secret's CAs, and again
    /// whenever they cannot be made to.
    ///
    /// Fails with a message naming the Secret when it cannot be read, created or used.
    pub async fn bootstrap(
        client: kube::Client,
        settings: Settings,
        ready: Arc<AtomicBool>,
    ) -> anyhow::Result<(Self, LoadedPair)> {
        settings.validate().map_err(anyhow::Error::msg)?;
        ready.store(false, Ordering::Release);
        let mut manager = Manager {
            secrets: Api::namespaced(client.clone(), &settings.namespace),
            client,
            settings,
            on_load: None,
            ready,
            served: None,
            last_state: None,
            due: OffsetDateTime::now_utc(),
        };
        tracing::info!(
            secret = %manager.settings.secret_label(),
            webhook_configuration = %manager.settings.webhook_config_name,
            cert_lifetime = %format_duration(manager.settings.cert_lifetime),
            ca_lifetime = %format_duration(manager.settings.ca_lifetime),
            ca_overlap = %format_duration(manager.settings.overlap()),
            dns = ?manager.settings.dns_names,
            ips = ?manager.settings.ip_addresses,
            "self-managed certificates"
        );
        let (pair, due) = manager
            .round()
            .await
            .map_err(|e| anyhow::anyhow!("self-managed certificate: {e}"))?;
        manager.due = due;
        Ok((manager, pair))
    }

    /// Keeps the certificate current in a task of its own: every change of the serving
    /// certificate (renewed here or by another replica) is passed to `on_load`.
    pub fn spawn(mut self, on_load: OnLoad) -> tokio::task::JoinHandle<()> {
        self.on_load = Some(on_load);
        let due = self.due;
        tokio::spawn(async move { self.run(due).await })
    }

    async fn run(mut self, mut due: OffsetDateTime) {
        loop {
            // Due in the past: what was due could not be done; look again in an interval.
            let left = to_std(due - OffsetDateTime::now_utc());
            let wait = if left.is_zero() {
                self.settings.interval
            } else {
                left.min(self.settings.interval)
            };
            tokio::time::sleep(wait).await;
            match self.round().await {
                Ok((_, next)) => due = next,
                Err(e) => {
                    tracing::warn!(error = %e, "self-managed certificate: round failed; keeping the current certificate, retrying");
                    due = OffsetDateTime::now_utc() + to_time(self.settings.interval);
                }
            }
        }
    }

    fn api_error(&self, what: &str, e: kube::Error) -> RoundError {
        let hint = match &e {
            kube::Error::Api(s) if s.is_forbidden() => format!(
                " (RBAC: the webhook needs get, create and update on {}, and get and update on \
                 the webhook configurations {})",
                self.settings.secret_label(),
                self.settings.webhook_config_name
            ),
            _ => String::new(),
        };
        RoundError::Api(format!("{what}: {e}{hint}"))
    }

    /// One pass: read (or create) the Secret, renew what is due, write the caBundle, install
    /// the serving certificate. Returns the installed pair and when to look again.
    async fn round(&mut self) -> Result<(LoadedPair, OffsetDateTime), RoundError> {
        let label = self.settings.secret_label();
        let name = self.settings.secret_name.clone();
        let mut secret = match self.secrets.get_opt(&name).await {
            Ok(s) => s,
            Err(e) => return Err(self.api_error(&format!("reading {label}"), e)),
        };
        let mut conflicts = 0;
        let mut wrote = false;
        loop {
            let current = match secret.take() {
                Some(s) => s,
                None => self.create(&label).await?,
            };
            if is_blank(&current) {
                // Created empty by someone else (a placeholder of an install tool): fill it.
                let plan = Plan {
                    material: Material::fresh(&self.settings, OffsetDateTime::now_utc())?,
                    reasons: vec![
                        "the Secret held no certificate: new CA and serving certificate".into(),
                    ],
                };
                match self.write(&current, &plan, &label, &mut conflicts).await? {
                    Write::Written(s) => {
                        wrote = true;
                        secret = Some(s);
                    }
                    Write::Lost(s) => secret = s,
                    Write::Failed(e) => {
                        return Err(self.api_error(&format!("updating {label}"), e));
                    }
                }
                continue;
            }
            let parsed = Material::parse(&current, &label)?;
            let desired = parsed.material.ca_bundle_pem();
            let state = match sync_bundles(
                &self.client,
                &self.settings.webhook_config_name,
                desired.as_bytes(),
            )
            .await
            {
                Ok(state) => Some(state),
                Err(e) => {
                    let e = self.api_error("cannot read or write the caBundle", e);
                    tracing::warn!(webhook_configuration = %self.settings.webhook_config_name, "{e}");
                    None
                }
            };
            self.note_bundle(state, &parsed);
            let now = OffsetDateTime::now_utc();
            // A caBundle this replica rewrote right after its own update of the Secret is as
            // old as that update: the overlap counts from it already.
            let bundle_current = match state {
                Some(BundleState::Current | BundleState::Missing) => true,
                Some(BundleState::Rewritten) => wrote,
                None => false,
            };
            let mut due = next_due(&parsed, &self.settings);
            if let Some(plan) = plan(&parsed, &self.settings, now, bundle_current)? {
                match self.write(&current, &plan, &label, &mut conflicts).await? {
                    Write::Written(s) => {
                        wrote = true;
                        secret = Some(s);
                        continue;
                    }
                    Write::Lost(s) => {
                        secret = s;
                        continue;
                    }
                    Write::Failed(e) => {
                        // Cannot renew now: keep serving what is there while it is valid.
                        tracing::warn!(
                            secret = %label,
                            changes = %plan.reasons.join("; "),
                            error = %e,
                            "cannot update the self-managed certificate; retrying"
                        );
                        if !parsed.pair.leaf_validity().is_valid_at(now) {
                            return Err(self.api_error(&format!("updating {label}"), e));
                        }
                        due = now;
                    }
                }
            }
            self.install(&parsed, &label);
            self.set_ready(state);
            return Ok((parsed.pair, due));
        }
    }

    /// The compare-and-swap update of the Secret read as `current`.
    async fn write(
        &self,
        current: &Secret,
        plan: &Plan,
        label: &str,
        conflicts: &mut u32,
    ) -> Result<Write, RoundError> {
        let updated = plan.material.apply_to(current);
        match self
            .secrets
            .replace(&self.settings.secret_name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => {
                tracing::info!(
                    secret = %label,
                    changes = %plan.reasons.join("; "),
                    "self-managed certificate updated"
                );
                Ok(Write::Written(written))
            }
            Err(kube::Error::Api(status)) if status.is_conflict() && *conflicts < 5 => {
                // Another replica wrote first: start over from theirs.
                *conflicts += 1;
                tracing::debug!(secret = %label, "update lost to another replica; reading theirs");
                match self.secrets.get_opt(&self.settings.secret_name).await {
                    Ok(s) => Ok(Write::Lost(s)),
                    Err(e) => Err(self.api_error(&format!("reading {label}"), e)),
                }
            }
            Err(e) => Ok(Write::Failed(e)),
        }
    }

    /// Creates the Secret with a new CA; if another replica created it first, reads theirs.
    async fn create(&self, label: &str) -> Result<Secret, RoundError> {
        let material = Material::fresh(&self.settings, OffsetDateTime::now_utc())?;
        match create_or_read(&self.secrets, &self.settings, &material).await {
            Ok((secret, _)) => Ok(secret),
            Err(e @ kube::Error::Api(_)) => Err(self.api_error(&format!("creating {label}"), e)),
            Err(e) => Err(RoundError::Api(format!("creating {label}: {e}"))),
        }
    }

    fn install(&mut self, parsed: &Parsed, label: &str) {
        let content = (
            parsed.material.leaf.cert.clone().into_bytes(),
            parsed.material.leaf.key.clone().into_bytes(),
        );
        if self.served.as_ref() == Some(&content) {
            return;
        }
        if let Some(on_load) = &self.on_load {
            on_load(&parsed.pair);
        }
        let what = if self.served.is_none() {
            "serving the self-managed certificate"
        } else {
            "serving certificate reloaded from the Secret"
        };
        crate::files::log_installed(&parsed.pair, label, what);
        self.served = Some(content);
    }

    /// Logs what the caBundle sync did: each rewrite, and a missing configuration once.
    fn note_bundle(&mut self, state: Option<BundleState>, parsed: &Parsed) {
        let name = &self.settings.webhook_config_name;
        match state {
            Some(BundleState::Rewritten) => {
                let cas: Vec<String> = parsed
                    .material
                    .cas
                    .iter()
                    .map(|c| short(&c.serial()).to_owned())
                    .collect();
                tracing::info!(webhook_configuration = %name, cas = ?cas, "caBundle written");
            }
            Some(BundleState::Missing) if self.last_state != Some(BundleState::Missing) => {
                tracing::warn!(
                    webhook_configuration = %name,
                    "no MutatingWebhookConfiguration of this name: nothing to write the caBundle into; not ready until it exists"
                );
            }
            _ => {}
        }
        if state.is_some() {
            self.last_state = state;
        }
    }

    /// Ready once the certificate is installed and the caBundle holds the Secret's CAs;
    /// unknown (an API error) keeps what it was.
    fn set_ready(&mut self, state: Option<BundleState>) {
        let Some(state) = state else {
            return;
        };
        let ready = matches!(state, BundleState::Current | BundleState::Rewritten);
        if self.ready.swap(ready, Ordering::AcqRel) != ready {
            tracing::info!(ready, "certificate readiness");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn settings(cert: u64, ca: u64) -> Settings {
        Settings {
            namespace: "wi-system".into(),
            secret_name: "wi-webhook-tls".into(),
            webhook_config_name: "wi-webhook".into(),
            dns_names: Settings::service_dns_names("wi-webhook", "wi-system", &[]),
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            cert_lifetime: StdDuration::from_secs(cert),
            ca_lifetime: StdDuration::from_secs(ca),
            interval: StdDuration::from_secs(1),
        }
    }

    fn parse(material: &Material, s: &Settings) -> Parsed {
        Material::parse(&material.to_secret(s), "Secret wi-system/wi-webhook-tls").unwrap()
    }

    fn secs(n: i64) -> Duration {
        Duration::seconds(n)
    }

    #[test]
    fn dns_names_of_a_service() {
        assert_eq!(
            Settings::service_dns_names(
                "wi-webhook",
                "ns",
                &["extra.example".into(), "wi-webhook".into()]
            ),
            [
                "wi-webhook.ns.svc",
                "wi-webhook",
                "wi-webhook.ns",
                "wi-webhook.ns.svc.cluster.local",
                "extra.example"
            ]
        );
    }

    #[test]
    fn settings_refuse_lifetimes_rotation_cannot_keep_up_with() {
        assert!(settings(30, 60).validate().is_ok());
        let defaults = Settings {
            interval: StdDuration::from_secs(10),
            ..settings(90 * 86_400, 3650 * 86_400)
        };
        assert!(defaults.validate().is_ok());
        assert_eq!(defaults.overlap(), MAX_OVERLAP);
        assert_eq!(settings(30, 60).overlap(), StdDuration::from_secs(5));
        let e = settings(5, 60).validate().unwrap_err();
        assert!(e.contains("--cert-lifetime 5s"), "{e}");
        let e = settings(30, 40).validate().unwrap_err();
        assert!(e.contains("at least twice"), "{e}");
        let e = settings(10, 30).validate().unwrap_err();
        assert!(e.contains("three reload intervals"), "{e}");
    }

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
    fn leaf_renewed_when_a_third_is_left_with_the_same_ca() {
        let s = settings(30, 600);
        let t0 = OffsetDateTime::now_utc();
        let m = Material::fresh(&s, t0).unwrap();
        let p = parse(&m, &s);
        let v = p.pair.leaf_validity();
        // Backdated 3 s: [t0-3, t0+30], 33 s, renewed at t0+19.
        assert!(
            plan(&p, &s, v.renew_at() - secs(1), true)
                .unwrap()
                .is_none()
        );
        let plan = plan(&p, &s, v.renew_at(), true)
            .unwrap()
            .expect("renewal due");
        assert!(
            plan.reasons[0].contains("a third of its lifetime left"),
            "{:?}",
            plan.reasons
        );
        let q = parse(&plan.material, &s);
        assert_eq!(q.leaf_issuer, Some(0));
        assert_eq!(q.material.cas[0].der, p.material.cas[0].der, "same CA");
        assert_ne!(q.pair.serial(), p.pair.serial());
    }

    #[test]
    fn ca_rollover_adds_switches_then_drops_an_overlap_apart() {
        let s = settings(30, 60);
        let overlap = to_time(s.overlap());
        let t0 = OffsetDateTime::now_utc();
        let m = Material::fresh(&s, t0).unwrap();
        let p = parse(&m, &s);
        let ca1 = p.material.cas[0].clone();
        let t1 = ca1.validity.renew_at();

        // Step 1: a new CA is trusted next to the old one; the leaf (renewed too, it is due)
        // is still signed by the old one.
        let step1 = plan(&p, &s, t1, true).unwrap().expect("CA rollover due");
        let p1 = parse(&step1.material, &s);
        assert_eq!(p1.material.cas.len(), 2);
        assert_eq!(p1.material.cas[0].der, ca1.der);
        assert_eq!(p1.leaf_issuer, Some(0), "{:?}", step1.reasons);
        assert_eq!(p1.material.rollover_at, Some(t1));
        assert!(
            p1.pair.leaf_validity().not_after <= ca1.validity.not_after,
            "capped by its CA"
        );

        // Within the overlap: nothing (the leaf is fresh), or a renewal by the OLD CA.
        assert!(
            plan(&p1, &s, t1 + overlap - secs(1), true)
                .unwrap()
                .is_none()
        );
        // The caBundle was found out of date: the overlap starts again.
        let restart = plan(&p1, &s, t1 + overlap, false)
            .unwrap()
            .expect("restart");
        assert_eq!(restart.material.rollover_at, Some(t1 + overlap));
        assert_eq!(parse(&restart.material, &s).leaf_issuer, Some(0));

        // Step 2: the leaf moves to the new CA.
        let t2 = t1 + overlap;
        let step2 = plan(&p1, &s, t2, true).unwrap().expect("switch due");
        let p2 = parse(&step2.material, &s);
        assert_eq!(p2.material.cas.len(), 2);
        assert_eq!(p2.leaf_issuer, Some(1), "{:?}", step2.reasons);
        assert_eq!(p2.material.rollover_at, Some(t2));
        assert!(
            plan(&p2, &s, t2 + overlap - secs(1), true)
                .unwrap()
                .is_none()
        );

        // Step 3: the old CA goes.
        let t3 = t2 + overlap;
        let step3 = plan(&p2, &s, t3, true).unwrap().expect("drop due");
        let p3 = parse(&step3.material, &s);
        assert_eq!(p3.material.cas.len(), 1);
        assert_eq!(p3.material.cas[0].der, p2.material.cas[1].der);
        assert_eq!(p3.leaf_issuer, Some(0));
        assert_eq!(p3.pair.serial(), p2.pair.serial(), "the leaf is kept");
        assert_eq!(p3.material.rollover_at, None);
        assert!(
            step3
                .material
                .to_secret(&s)
                .metadata
                .annotations
                .unwrap()
                .is_empty()
        );
        // Before the old CA expires.
        assert!(
            t3 < ca1.validity.not_after,
            "{t3} vs {}",
            ca1.validity.not_after
        );
        assert!(plan(&p3, &s, t3 + secs(1), true).unwrap().is_none());
    }

    #[test]
    fn expired_everything_starts_over() {
        let s = settings(30, 60);
        let t0 = OffsetDateTime::now_utc() - Duration::days(1);
        let p = parse(&Material::fresh(&s, t0).unwrap(), &s);
        let now = OffsetDateTime::now_utc();
        let fresh = plan(&p, &s, now, true).unwrap().expect("due");
        assert!(fresh.reasons[0].contains("every CA has expired"));
        let q = parse(&fresh.material, &s);
        assert!(q.material.cas[0].validity.is_valid_at(now));
        assert!(q.pair.leaf_validity().is_valid_at(now));
    }

    #[test]
    fn leaf_missing_a_name_is_reissued_with_both_sets() {
        let s = settings(3600, 86_400);
        let now = OffsetDateTime::now_utc();
        let p = parse(&Material::fresh(&s, now).unwrap(), &s);
        let other = Settings {
            dns_names: vec!["other.example".into()],
            ..s.clone()
        };
        let plan = plan(&p, &other, now, true).unwrap().expect("names missing");
        let q = parse(&plan.material, &other);
        assert!(q.leaf_dns.contains(&"other.example".to_owned()));
        assert!(q.leaf_dns.contains(&"wi-webhook.wi-system.svc".to_owned()));
        // Both replicas are now content.
        assert!(super::plan(&q, &other, now, true).unwrap().is_none());
        assert!(super::plan(&q, &s, now, true).unwrap().is_none());
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
        assert!(
            e.contains("2 certificate(s)") && e.contains("1 key(s)"),
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

    #[test]
    fn bundles_compare_as_sets_of_certificates() {
        let s = settings(30, 60);
        let now = OffsetDateTime::now_utc();
        let a = Material::fresh(&s, now).unwrap();
        let b = Material::fresh(&s, now).unwrap();
        let (ca, cb) = (&a.cas[0].pem().cert, &b.cas[0].pem().cert);
        let bs = |s: &str| ByteString(s.as_bytes().to_vec());
        assert!(same_bundle(Some(&bs(ca)), ca.as_bytes()));
        assert!(same_bundle(
            Some(&bs(&format!("{cb}\n{ca}"))),
            format!("{ca}{cb}").as_bytes()
        ));
        assert!(!same_bundle(Some(&bs(ca)), format!("{ca}{cb}").as_bytes()));
        assert!(!same_bundle(Some(&bs("")), ca.as_bytes()));
        assert!(!same_bundle(None, ca.as_bytes()));
    }
}
