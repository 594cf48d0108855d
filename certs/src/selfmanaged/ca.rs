//! A CA of the Secret with its key: what signs the serving certificate.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use super::Settings;
use crate::expiry::{Validity, issue_window};
use crate::{Ca, GenerateError, Pem, serial_hex};

/// A CA of the Secret, with its key.
#[derive(Clone)]
pub struct CaCert {
    ca: Arc<Ca>,
    pub(super) der: CertificateDer<'static>,
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
    pub(super) fn new(ca: Ca) -> Result<Self, GenerateError> {
        let der = CertificateDer::from_pem_slice(ca.pem().cert.as_bytes())
            .map_err(|e| GenerateError::BadCertificate(e.into()))?
            .into_owned();
        let validity = Validity::of_der(&der).map_err(GenerateError::BadCertificate)?;
        Ok(Self {
            ca: Arc::new(ca),
            der,
            validity,
        })
    }

    pub(super) fn generate(
        now: OffsetDateTime,
        lifetime: StdDuration,
    ) -> Result<Self, GenerateError> {
        let window = issue_window(now, lifetime, None);
        Self::new(Ca::generate_until(window.not_before, window.not_after)?)
    }

    pub fn serial(&self) -> String {
        serial_hex(&self.der)
    }

    pub fn pem(&self) -> &Pem {
        self.ca.pem()
    }

    pub(super) fn issue(
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
