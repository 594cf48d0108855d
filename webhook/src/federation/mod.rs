//! The Azure half of "one identity, one pool": the federated identity credentials of the
//! pools' managed identities, read as `az ... -o json` and `terraform show -json` print them
//! (`read`, `terraform`), checked against the AgentPools, the cluster's service-account issuer
//! and the webhook's audience (`rules`). Everything here is pure over JSON values.

pub mod read;
pub mod rules;
pub mod subject;
pub mod terraform;
pub mod token;

use crate::policy::index::client_key;

/// Azure's limit of federated identity credentials on one user-assigned identity.
pub const MAX_CREDENTIALS_PER_IDENTITY: usize = 20;

/// A user-assigned managed identity, as far as the inputs tell.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// How credentials point at it: its Azure resource id and, from Terraform, its address.
    pub keys: Vec<String>,
    /// Its name (Azure) or Terraform address, for messages.
    pub name: String,
    /// None when the inputs do not say (a Terraform plan before the identity exists).
    pub client_id: Option<String>,
    pub tenant_id: Option<String>,
    /// Where it was read.
    pub source: String,
}

/// One federated identity credential.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credential {
    pub name: String,
    /// The key of its identity (`Identity::key`); empty when the inputs do not say.
    pub identity: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// Where it was read: `file#N` and, for Terraform, the resource address.
    pub source: String,
}

/// Everything read from the inputs.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub identities: Vec<Identity>,
    pub credentials: Vec<Credential>,
}

/// Resource ids and Terraform addresses compare case-insensitively (Azure spells
/// `resourceGroups` both ways).
pub fn id_key(id: &str) -> String {
    id.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl Credentials {
    /// The identity a credential belongs to, if the inputs describe it.
    pub fn identity_of(&self, credential: &Credential) -> Option<&Identity> {
        let key = id_key(&credential.identity);
        self.identities
            .iter()
            .find(|i| !key.is_empty() && i.keys.iter().any(|k| id_key(k) == key))
    }

    /// The client id of a credential's identity, if known.
    pub fn client_of(&self, credential: &Credential) -> Option<&str> {
        self.identity_of(credential)?.client_id.as_deref()
    }

    /// The credentials of the identity whose client id is `client_id`.
    pub fn of_client<'a>(&'a self, client_id: &str) -> impl Iterator<Item = &'a Credential> {
        let key = client_key(client_id);
        self.credentials
            .iter()
            .filter(move |c| self.client_of(c).is_some_and(|id| client_key(id) == key))
    }

    /// Whether the inputs describe the identity whose client id is `client_id` at all (an
    /// identity with no credential still counts: its pool's agents get no token).
    pub fn knows_client(&self, client_id: &str) -> bool {
        let key = client_key(client_id);
        self.identities
            .iter()
            .any(|i| i.client_id.as_deref().is_some_and(|c| client_key(c) == key))
    }

    pub fn extend(&mut self, other: Credentials) {
        for identity in other.identities {
            // The same identity read twice (az identity show and a state): keep the first,
            // filling in what it lacks.
            let same = |i: &Identity| {
                i.keys
                    .iter()
                    .any(|k| identity.keys.iter().any(|o| id_key(k) == id_key(o)))
            };
            match self.identities.iter_mut().find(|i| same(i)) {
                Some(known) => {
                    if known.client_id.is_none() {
                        known.client_id = identity.client_id;
                    }
                    if known.tenant_id.is_none() {
                        known.tenant_id = identity.tenant_id;
                    }
                    known.keys.extend(identity.keys);
                }
                None => self.identities.push(identity),
            }
        }
        self.credentials.extend(other.credentials);
    }
}
