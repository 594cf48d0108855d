//! The caBundle of the webhook configurations: compared as a set of certificates and
//! written with compare-and-swap updates.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::api::{Api, PostParams};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfmanaged::Material;
    use crate::selfmanaged::test_support::settings;
    use time::OffsetDateTime;

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
