//! Who asks: the request's user and groups, as the API server authenticated them, matched
//! against an AgentPool's break-glass lists (`spec.access`). Shared by the rules on the
//! paths to a pool pod's token other than the pod's own configuration (`shell`, `tokens`,
//! `origin`); each is a pure function of the request and the pool index.

use std::sync::Arc;

use super::crd::{AccessSubject, PoolAccess, SubjectKind};
use super::index::Pool;
use super::rules::{Violation, violation};

/// The authenticated requester (`request.userInfo`). The API server sets it after
/// authentication (and impersonation): the object's author cannot write it.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
}

impl Requester<'_> {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// The entry of `list` that names this requester, if any.
    pub fn listed<'s>(&self, list: &'s [AccessSubject]) -> Option<&'s AccessSubject> {
        list.iter().find(|s| match s.kind {
            SubjectKind::User => s.name == self.user,
            SubjectKind::Group => self.in_group(&s.name),
            // Without a namespace the entry is malformed (the CRD refuses it): it names nobody.
            SubjectKind::ServiceAccount => s.namespace.as_deref().is_some_and(|ns| {
                self.user
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.split_once(':'))
                    == Some((ns, s.name.as_str()))
            }),
        })
    }
}

impl std::fmt::Display for Requester<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let user = if self.user.is_empty() {
            "(no user name)"
        } else {
            self.user
        };
        if self.groups.is_empty() {
            write!(f, "user {user}")
        } else {
            write!(f, "user {user} (groups {})", self.groups.join(", "))
        }
    }
}

/// `User alice`, `Group ops`, `ServiceAccount ns/name`.
pub fn subject_text(s: &AccessSubject) -> String {
    match (s.kind, s.namespace.as_deref()) {
        (SubjectKind::ServiceAccount, Some(ns)) => format!("ServiceAccount {ns}/{}", s.name),
        (kind, _) => format!("{kind:?} {}", s.name),
    }
}

/// A use of a break-glass list: allowed, and recorded (log, metric, Event on the pool).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub pool: String,
    pub team: String,
    pub rule: &'static str,
    /// `spec.access.shell` and the like.
    pub list: &'static str,
    /// The requester, as [`Requester`] prints it.
    pub user: String,
    /// The entry that matched.
    pub subject: String,
    /// What was done: `exec into pod ns/name`.
    pub action: String,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "[{}] {}: {}, allowed as {} in {} of pool {}",
            self.rule, self.user, self.action, self.subject, self.list, self.pool
        )
    }
}

/// What one of these rules found: violations (decided by each pool's enforcement) and
/// grants (listed subjects).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    pub violations: Vec<Violation>,
    pub grants: Vec<Grant>,
}

/// One of the break-glass lists, as the rules name it.
#[derive(Clone, Copy, Debug)]
pub struct List {
    pub rule: &'static str,
    pub name: &'static str,
    pub of: fn(&PoolAccess) -> &[AccessSubject],
}

/// The common decision: for every pool concerned, a requester the rule exempts passes, one
/// in the pool's list is granted, anyone else violates (`message` says why, for that pool).
pub(super) fn decide(
    pools: &[Arc<Pool>],
    requester: &Requester<'_>,
    exempt: bool,
    list: List,
    action: &str,
    message: impl Fn(&Pool) -> String,
) -> Check {
    let mut check = Check::default();
    if exempt {
        return check;
    }
    for pool in pools {
        match requester.listed((list.of)(&pool.access)) {
            Some(entry) => check.grants.push(Grant {
                pool: pool.name.clone(),
                team: pool.team.clone(),
                rule: list.rule,
                list: list.name,
                user: requester.to_string(),
                subject: subject_text(entry),
                action: action.to_string(),
            }),
            None => check
                .violations
                .push(violation(pool, list.rule, message(pool))),
        }
    }
    check
}

/// A pool of one namespace and ServiceAccount `agent`, Enforce, empty lists.
#[cfg(test)]
pub(super) fn test_pool(name: &str, namespace: &str) -> Pool {
    Pool {
        name: name.into(),
        team: format!("team-{name}"),
        client_id: format!("{name}-client"),
        tenant_id: None,
        namespaces: vec![namespace.into()],
        service_accounts: vec!["agent".into()],
        enforcement: super::crd::Enforcement::Enforce,
        access: Default::default(),
        created: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(kind: SubjectKind, name: &str, namespace: Option<&str>) -> AccessSubject {
        AccessSubject {
            kind,
            name: name.into(),
            namespace: namespace.map(str::to_string),
        }
    }

    #[test]
    fn users_groups_and_service_accounts_match_as_rbac_subjects_do() {
        let groups = vec!["ops".to_string(), "system:authenticated".to_string()];
        let alice = Requester {
            user: "alice",
            groups: &groups,
        };
        let sa = Requester {
            user: "system:serviceaccount:ci:deployer",
            groups: &[],
        };
        let list = [
            subject(SubjectKind::User, "bob", None),
            subject(SubjectKind::Group, "ops", None),
        ];
        assert_eq!(alice.listed(&list), Some(&list[1]));
        assert_eq!(sa.listed(&list), None);
        let by_sa = [subject(SubjectKind::ServiceAccount, "deployer", Some("ci"))];
        assert_eq!(sa.listed(&by_sa), Some(&by_sa[0]));
        // The same name in another namespace, a user named like the ServiceAccount, and an
        // entry without a namespace name nobody.
        for list in [
            [subject(SubjectKind::ServiceAccount, "deployer", Some("cd"))],
            [subject(SubjectKind::User, "deployer", None)],
            [subject(SubjectKind::ServiceAccount, "deployer", None)],
        ] {
            assert_eq!(sa.listed(&list), None, "{list:?}");
        }
        // A user is not a group of the same name, nor the other way round.
        assert_eq!(
            alice.listed(&[subject(SubjectKind::Group, "alice", None)]),
            None
        );
        assert_eq!(
            alice.listed(&[subject(SubjectKind::User, "ops", None)]),
            None
        );
        assert_eq!(
            alice.to_string(),
            "user alice (groups ops, system:authenticated)"
        );
    }
}
