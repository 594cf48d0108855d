//! The loop every replica runs: read or create the Secret, write the caBundle, renew what
//! is due, install the serving certificate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use time::OffsetDateTime;

use super::secret::is_blank;
use super::{
    BundleState, Error, Material, Parsed, Plan, Settings, next_due, plan, short, sync_bundles,
};
use crate::LoadedPair;
use crate::expiry::{format_duration, to_std, to_time};
use crate::files::OnLoad;

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
    ) -> Result<(Self, LoadedPair), Error> {
        settings.validate()?;
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
            .map_err(|e| Error::Start(Box::new(e)))?;
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

    fn api_error(&self, what: &str, error: kube::Error) -> Error {
        let hint = match &error {
            kube::Error::Api(s) if s.is_forbidden() => format!(
                " (RBAC: the webhook needs get, create and update on {}, and get and update on \
                 the webhook configurations {})",
                self.settings.secret_label(),
                self.settings.webhook_config_name
            ),
            _ => String::new(),
        };
        Error::Api {
            what: what.to_owned(),
            error,
            hint,
        }
    }

    /// One pass: read (or create) the Secret, renew what is due, write the caBundle, install
    /// the serving certificate. Returns the installed pair and when to look again.
    async fn round(&mut self) -> Result<(LoadedPair, OffsetDateTime), Error> {
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
    ) -> Result<Write, Error> {
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
    async fn create(&self, label: &str) -> Result<Secret, Error> {
        let material = Material::fresh(&self.settings, OffsetDateTime::now_utc())?;
        match create_or_read(&self.secrets, &self.settings, &material).await {
            Ok((secret, _)) => Ok(secret),
            // Only a refusal gets the RBAC hint.
            Err(e) => Err(self.api_error(&format!("creating {label}"), e)),
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
