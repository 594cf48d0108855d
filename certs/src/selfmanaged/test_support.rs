//! What the tests of the self-managed mode share.

use std::time::Duration as StdDuration;

use time::Duration;

use super::{Material, Parsed, Settings};

pub(super) fn settings(cert: u64, ca: u64) -> Settings {
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

pub(super) fn parse(material: &Material, s: &Settings) -> Parsed {
    Material::parse(&material.to_secret(s), "Secret wi-system/wi-webhook-tls").unwrap()
}

pub(super) fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}
