//! What the self-managed mode is told: names, lifetimes and how often to look, checked so
//! that rotation can keep up.

use std::net::IpAddr;
use std::time::Duration as StdDuration;

use crate::expiry::format_duration;

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
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.dns_names.is_empty() && self.ip_addresses.is_empty() {
            return Err(SettingsError::NoNames);
        }
        if self.cert_lifetime < self.interval * 6 {
            return Err(SettingsError::CertLifetimeTooShort {
                cert_lifetime: self.cert_lifetime,
                interval: self.interval,
            });
        }
        if self.ca_lifetime < self.cert_lifetime * 2 {
            return Err(SettingsError::CaLifetimeBelowTwice {
                ca_lifetime: self.ca_lifetime,
                cert_lifetime: self.cert_lifetime,
            });
        }
        if self.overlap() < self.interval * 3 {
            return Err(SettingsError::OverlapTooShort {
                ca_lifetime: self.ca_lifetime,
                interval: self.interval,
                overlap: self.overlap(),
            });
        }
        Ok(())
    }

    pub(super) fn secret_label(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.secret_name)
    }
}

/// Settings the rotation cannot keep up with; the messages name the command-line flags.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("the serving certificate needs at least one DNS name or IP")]
    NoNames,
    #[error(
        "--cert-lifetime {} is too short for --cert-reload-interval {}: give at least six \
         reload intervals, so that a renewal (due when a third of the lifetime is left) \
         is seen by every replica well before the certificate expires",
        f(.cert_lifetime),
        f(.interval)
    )]
    CertLifetimeTooShort {
        cert_lifetime: StdDuration,
        interval: StdDuration,
    },
    #[error(
        "--ca-lifetime {} must be at least twice --cert-lifetime {}",
        f(.ca_lifetime),
        f(.cert_lifetime)
    )]
    CaLifetimeBelowTwice {
        ca_lifetime: StdDuration,
        cert_lifetime: StdDuration,
    },
    #[error(
        "--ca-lifetime {} is too short for --cert-reload-interval {}: a CA rollover waits \
         a twelfth of the CA lifetime ({}) between steps, which must be at least three \
         reload intervals",
        f(.ca_lifetime),
        f(.interval),
        f(.overlap)
    )]
    OverlapTooShort {
        ca_lifetime: StdDuration,
        interval: StdDuration,
        overlap: StdDuration,
    },
}

fn f(d: &StdDuration) -> String {
    format_duration(*d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfmanaged::test_support::settings;

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
        let e = settings(5, 60).validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "--cert-lifetime 5s is too short for --cert-reload-interval 1s: give at least six \
             reload intervals, so that a renewal (due when a third of the lifetime is left) is \
             seen by every replica well before the certificate expires"
        );
        let e = settings(30, 40).validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "--ca-lifetime 40s must be at least twice --cert-lifetime 30s"
        );
        let e = settings(10, 30).validate().unwrap_err().to_string();
        assert!(
            e.contains("a twelfth of the CA lifetime (2s500ms)")
                && e.ends_with("at least three reload intervals"),
            "{e}"
        );
        let none = Settings {
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            ..settings(30, 60)
        };
        assert!(matches!(none.validate(), Err(SettingsError::NoNames)));
    }
}
