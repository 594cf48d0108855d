//! Kubernetes service-account subjects, `system:serviceaccount:<namespace>:<name>`: the `sub`
//! claim of every service-account token, and what a federated credential must name exactly.

const PREFIX: &str = "system:serviceaccount:";

/// The subject a token of ServiceAccount `namespace/name` carries.
pub fn of(namespace: &str, name: &str) -> String {
    format!("{PREFIX}{namespace}:{name}")
}

/// `(namespace, name)` of a well-formed subject: both non-empty DNS names, nothing else.
pub fn parse(subject: &str) -> Option<(&str, &str)> {
    let rest = subject.strip_prefix(PREFIX)?;
    let (namespace, name) = rest.split_once(':')?;
    (dns(namespace, 63) && dns(name, 253)).then_some((namespace, name))
}

fn dns(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
}

/// What a malformed subject most likely meant, among the known `(namespace, name)` pairs:
/// the pair joined by `-` instead of `:` (a common template slip), or the same subject with
/// whitespace or case fixed.
pub fn meant<'a>(
    subject: &str,
    known: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Option<(&'a str, &'a str)> {
    let cleaned = subject.trim().to_ascii_lowercase();
    let rest = cleaned.strip_prefix(PREFIX).unwrap_or(&cleaned);
    known.into_iter().find(|(ns, name)| {
        rest == format!("{ns}-{name}")
            || rest == format!("{ns}:{name}")
            || rest == format!("{ns}/{name}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_subjects_parse_and_others_do_not() {
        assert_eq!(
            parse("system:serviceaccount:ado-agents-linux:ado-agent-linux"),
            Some(("ado-agents-linux", "ado-agent-linux"))
        );
        for bad in [
            "system:serviceaccount:ado-agents-linux-ado-agent-linux",
            "system:serviceaccount:ns:sa:extra",
            "system:serviceaccount::sa",
            "system:serviceaccount:ns:",
            "system:serviceaccounts:ns",
            "system:serviceaccount:NS:sa",
            " system:serviceaccount:ns:sa",
            "repo:org/repo:ref:refs/heads/main",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_hyphen_joined_slip_is_matched_against_known_pairs() {
        let known = [
            ("ado-agents-linux", "ado-agent-linux"),
            ("ado-agents-win", "agent"),
        ];
        assert_eq!(
            meant(
                "system:serviceaccount:ado-agents-linux-ado-agent-linux",
                known
            ),
            Some(("ado-agents-linux", "ado-agent-linux"))
        );
        assert_eq!(
            meant(" System:ServiceAccount:ado-agents-win:agent ", known),
            Some(("ado-agents-win", "agent"))
        );
        assert_eq!(meant("system:serviceaccount:elsewhere-agent", known), None);
    }
}
