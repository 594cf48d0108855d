//! Pool isolation (SPEC section 4) plugs in here: given the pod and its ServiceAccount, it
//! names the owning AgentPool's identity (which feeds the mutation) and the violations found.
//! Until AgentPools exist every pod belongs to no pool and passes through with the plain
//! mutation, exactly like the upstream webhook.

use crate::mutation::PoolIdentity;
use crate::pod::PodView;

/// What the pool policy decided for one pod.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The owning pool's identity, used where the ServiceAccount names none.
    pub pool_identity: Option<PoolIdentity>,
}

/// The pool policy, evaluated once per admitted pod.
#[derive(Clone, Debug, Default)]
pub struct Policy {}

impl Policy {
    pub fn evaluate(&self, _pod: &PodView<'_>, _namespace: &str) -> Outcome {
        Outcome::default()
    }
}
