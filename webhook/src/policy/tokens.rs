//! `pool-token-request`: a token for a pool's ServiceAccount (TokenRequest, the
//! `serviceaccounts/token` subresource) is the pool's identity, whoever holds it. The
//! kubelet mints it for the pool's pods; anyone else needs a place in the AgentPool's
//! `spec.access.tokenRequesters`, cluster admins included.

use super::access::{self, Check, List, Requester};
use super::index::PoolIndex;
use super::rules::rule;

pub const LIST: List = List {
    rule: rule::TOKEN_REQUEST,
    name: "spec.access.tokenRequesters",
    of: |a| &a.token_requesters,
};

/// The group every kubelet authenticates in; with a `system:node:<name>` user name, the
/// Node authorizer lets it mint tokens only for pods bound to its node.
pub const NODES_GROUP: &str = "system:nodes";
const NODE_USER_PREFIX: &str = "system:node:";

/// A kubelet: user `system:node:<name>` in group `system:nodes`.
pub fn is_kubelet(requester: &Requester<'_>) -> bool {
    requester
        .user
        .strip_prefix(NODE_USER_PREFIX)
        .is_some_and(|node| !node.is_empty())
        && requester.in_group(NODES_GROUP)
}

/// The decision for a token of ServiceAccount `namespace/service_account`.
pub fn check(
    index: &PoolIndex,
    namespace: &str,
    service_account: &str,
    requester: &Requester<'_>,
) -> Check {
    let pools: Vec<_> = index
        .in_namespace(namespace)
        .iter()
        .filter(|p| p.service_accounts.iter().any(|s| s == service_account))
        .cloned()
        .collect();
    let action = format!("request a token for ServiceAccount {namespace}/{service_account}");
    access::decide(
        &pools,
        requester,
        is_kubelet(requester),
        LIST,
        &action,
        |p| {
            format!(
                "{requester} may not {action} of pool {} (team {}): the token is the pool's identity; only kubelets ({NODE_USER_PREFIX}<node> in group {NODES_GROUP}) and the subjects in the AgentPool's {} may",
                p.name, p.team, LIST.name
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access::test_pool;
    use crate::policy::crd::{AccessSubject, SubjectKind};

    #[test]
    fn kubelets_and_listed_subjects_get_tokens_and_nobody_else() {
        let mut p = test_pool("p", "agents");
        p.access.token_requesters = vec![AccessSubject {
            kind: SubjectKind::ServiceAccount,
            name: "minter".into(),
            namespace: Some("ci".into()),
        }];
        let index = PoolIndex::build([&p]);
        let nodes = vec![NODES_GROUP.to_string()];
        let masters = vec!["system:masters".to_string()];
        let who = |user, groups| Requester { user, groups };

        let kubelet = check(&index, "agents", "agent", &who("system:node:n1", &nodes));
        assert_eq!(kubelet, Check::default(), "kubelets pass, unrecorded");

        let listed = check(
            &index,
            "agents",
            "agent",
            &who("system:serviceaccount:ci:minter", &[]),
        );
        assert!(listed.violations.is_empty());
        assert_eq!(listed.grants[0].subject, "ServiceAccount ci/minter");

        // Not kubelets: a node user outside the group, the group with another user name, a
        // node name that is empty, and a cluster admin.
        for (user, groups) in [
            ("system:node:n1", &[][..]),
            ("mallory", &nodes[..]),
            ("system:node:", &nodes[..]),
            ("admin", &masters[..]),
        ] {
            let r = check(&index, "agents", "agent", &who(user, groups));
            assert_eq!(r.violations.len(), 1, "{user} {groups:?}");
            assert_eq!(r.violations[0].rule, "pool-token-request");
            assert!(
                r.violations[0]
                    .message
                    .contains("ServiceAccount agents/agent"),
                "{}",
                r.violations[0].message
            );
        }
        // Not the pool's ServiceAccount, or not its namespace: not this rule's.
        let admin = who("admin", &masters);
        assert_eq!(check(&index, "agents", "default", &admin), Check::default());
        assert_eq!(
            check(&index, "kube-system", "agent", &admin),
            Check::default()
        );
    }
}
