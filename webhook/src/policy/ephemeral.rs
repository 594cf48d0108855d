//! `kubectl debug` on a pool's pod: an ephemeral container added to it would read the token.

use std::collections::BTreeSet;

use super::index::Pool;
use super::rules::{Violation, rule, violation};
use crate::pod::{ContainerList, PodView, container_name};

/// `kubectl debug` on a pool's pod: ephemeral containers that `new` has and `old` had not.
pub fn ephemeral_added(
    pool: &Pool,
    new: &PodView<'_>,
    old: Option<&PodView<'_>>,
) -> Option<Violation> {
    let before: BTreeSet<&str> = old
        .map(|o| {
            o.containers(ContainerList::Ephemeral)
                .unwrap_or(&[])
                .iter()
                .map(container_name)
                .collect()
        })
        .unwrap_or_default();
    let added: Vec<&str> = new
        .containers(ContainerList::Ephemeral)
        .unwrap_or(&[])
        .iter()
        .map(container_name)
        .filter(|n| !before.contains(n))
        .collect();
    (!added.is_empty()).then(|| violation(pool, rule::EPHEMERAL, format!(
        "pod {} of pool {} (team {}): ephemeral container {} would read the pool's token; debug a copy of the pod outside the pool's namespaces instead",
        new.display(), pool.name, pool.team, added.join(", ")
    )))
}
