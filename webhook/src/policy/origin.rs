//! `pool-pod-origin`: pool pods come from the pool's workloads. A pod created in a pool's
//! namespace by a person (`kubectl run`, `kubectl debug --copy-to`) is refused unless the
//! creator is in the AgentPool's `spec.access.podCreators`.
//!
//! The creator is the request's authenticated user, set by the API server: a pod's author
//! can write ownerReferences, but not who sent the request.

use super::access::{self, Check, List, Requester};
use super::index::PoolIndex;
use super::rules::rule;

pub const LIST: List = List {
    rule: rule::POD_ORIGIN,
    name: "spec.access.podCreators",
    of: |a| &a.pod_creators,
};

/// The users kube-controller-manager's pod-creating controllers authenticate as: each
/// controller's own ServiceAccount in kube-system (`--use-service-account-credentials`,
/// the usual setting), or the controller-manager's own identity without it. The CronJob
/// controller creates Jobs, never pods, so it is not one of them.
pub const CONTROLLERS: [&str; 6] = [
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:serviceaccount:kube-system:replication-controller",
    "system:serviceaccount:kube-system:statefulset-controller",
    "system:serviceaccount:kube-system:daemon-set-controller",
    "system:serviceaccount:kube-system:job-controller",
    "system:kube-controller-manager",
];

/// The decision for a pod CREATE in `namespace`; `pod` is its display name.
pub fn check(index: &PoolIndex, namespace: &str, pod: &str, requester: &Requester<'_>) -> Check {
    let action = format!("create pod {pod} directly");
    access::decide(
        index.in_namespace(namespace),
        requester,
        CONTROLLERS.contains(&requester.user),
        LIST,
        &action,
        |p| {
            format!(
                "pod {pod} in namespace {namespace} of pool {} (team {}) is created by {requester}, not by a workload controller: the pool's pods come from its Deployments, StatefulSets, DaemonSets, ReplicaSets and Jobs; create it through one of them, run a copy outside the pool's namespaces, or add the creator to the AgentPool's {}",
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
    fn controllers_and_listed_creators_pass_people_do_not() {
        let mut p = test_pool("p", "agents");
        p.access.pod_creators = vec![AccessSubject {
            kind: SubjectKind::User,
            name: "ci-bot".into(),
            namespace: None,
        }];
        let index = PoolIndex::build([&p]);
        let who = |user| Requester { user, groups: &[] };
        for controller in CONTROLLERS {
            assert_eq!(
                check(&index, "agents", "agents/x", &who(controller)),
                Check::default(),
                "{controller}"
            );
        }
        let listed = check(&index, "agents", "agents/x", &who("ci-bot"));
        assert_eq!((listed.violations.len(), listed.grants.len()), (0, 1));

        // A person, the CronJob controller (it creates Jobs), and a ServiceAccount named like
        // a controller in another namespace.
        for user in [
            "alice",
            "system:serviceaccount:kube-system:cronjob-controller",
            "system:serviceaccount:agents:replicaset-controller",
        ] {
            let r = check(&index, "agents", "agents/x", &who(user));
            assert_eq!(r.violations.len(), 1, "{user}");
            assert_eq!(r.violations[0].rule, "pool-pod-origin");
            assert!(r.violations[0].message.contains(user));
        }
        assert_eq!(
            check(&index, "elsewhere", "elsewhere/x", &who("alice")),
            Check::default()
        );
    }
}
