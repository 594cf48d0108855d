//! `pool-shell-access`: `kubectl exec`, `attach` and `port-forward` into a pool's pod read
//! its token, and the API server's proxy to a pool's pod or Service reaches the identity
//! proxy sidecar that hands out the pool's Azure tokens, so they are the pool team's
//! break-glass: only the subjects in the AgentPool's `spec.access.shell` may, each use
//! recorded.
//!
//! A CONNECT request carries the options (command, container, ports), not the pod, so the
//! pod's pool is its namespace's: no read of the pod, nothing to race. The pool's token
//! exists only there (its federated credential trusts the pool's namespaces alone), and a
//! pod elsewhere that claims the pool by label or `AZP_POOL` is refused when created.

use super::access::{self, Check, List, Requester};
use super::index::PoolIndex;
use super::rules::rule;

pub const LIST: List = List {
    rule: rule::SHELL_ACCESS,
    name: "spec.access.shell",
    of: |a| &a.shell,
};

/// The decision for `verb` (`exec`, `attach`, `portforward`, `proxy`) into `kind` (`pod`
/// or `service`) `namespace/name`.
pub fn check(
    index: &PoolIndex,
    namespace: &str,
    kind: &str,
    name: &str,
    verb: &str,
    requester: &Requester<'_>,
) -> Check {
    let verb = if verb == "portforward" {
        "port-forward"
    } else {
        verb
    };
    let action = format!("{verb} into {kind} {namespace}/{name}");
    access::decide(
        index.in_namespace(namespace),
        requester,
        false,
        LIST,
        &action,
        |p| {
            format!(
                "{requester} may not {action} of pool {} (team {}): it would reach the pool's token; only the subjects in the AgentPool's {} may (break-glass, empty by default): add the user or one of their groups there, or debug a copy of the pod outside the pool's namespaces",
                p.name, p.team, LIST.name
            )
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::access::test_pool as pool;
    use crate::policy::crd::{AccessSubject, SubjectKind};

    #[test]
    fn only_listed_subjects_get_a_shell_and_each_use_is_a_grant() {
        let mut p = pool("p", "agents");
        p.access.shell = vec![AccessSubject {
            kind: SubjectKind::Group,
            name: "p-oncall".into(),
            namespace: None,
        }];
        let index = PoolIndex::build([&p]);
        let oncall = vec!["p-oncall".to_string()];
        let admin = vec!["system:masters".to_string()];
        let who = |user, groups| Requester { user, groups };

        let granted = check(
            &index,
            "agents",
            "pod",
            "agent-1",
            "exec",
            &who("alice", &oncall),
        );
        assert!(granted.violations.is_empty(), "{granted:?}");
        assert_eq!(granted.grants.len(), 1);
        let g = &granted.grants[0];
        assert_eq!(
            (g.pool.as_str(), g.rule, g.list, g.subject.as_str()),
            (
                "p",
                "pool-shell-access",
                "spec.access.shell",
                "Group p-oncall"
            )
        );
        assert_eq!(g.action, "exec into pod agents/agent-1");
        assert!(g.user.contains("alice"), "{g:?}");

        // Cluster admins are not listed: denied like anyone else.
        for verb in ["exec", "attach", "portforward", "proxy"] {
            let denied = check(
                &index,
                "agents",
                "pod",
                "agent-1",
                verb,
                &who("root", &admin),
            );
            assert!(denied.grants.is_empty());
            assert_eq!(denied.violations.len(), 1, "{verb}");
            let v = &denied.violations[0];
            assert_eq!((v.rule, v.pool.as_str()), ("pool-shell-access", "p"));
            assert!(
                v.message.contains("user root") && v.message.contains("agents/agent-1"),
                "{}",
                v.message
            );
        }
        // Outside the pool's namespaces: not the pool's business.
        let elsewhere = check(&index, "other", "pod", "x", "exec", &who("root", &admin));
        assert_eq!(elsewhere, Check::default());
    }

    #[test]
    fn a_namespace_of_two_pools_needs_both_lists() {
        let mut a = pool("a", "shared");
        let b = pool("b", "shared");
        a.access.shell = vec![AccessSubject {
            kind: SubjectKind::User,
            name: "alice".into(),
            namespace: None,
        }];
        let index = PoolIndex::build([&a, &b]);
        let r = check(
            &index,
            "shared",
            "service",
            "x",
            "proxy",
            &Requester {
                user: "alice",
                groups: &[],
            },
        );
        assert_eq!(r.grants.len(), 1);
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].pool, "b");
    }
}
