//! The renewal decisions: what is due at a given time, from the Secret's content alone.

use std::net::IpAddr;

use time::OffsetDateTime;

use super::{CaCert, Material, Parsed, Settings, short};
use crate::GenerateError;
use crate::expiry::{format_duration, to_time};
use crate::rfc3339;

/// A change to make to the Secret, and why.
#[derive(Debug)]
pub struct Plan {
    pub material: Material,
    pub reasons: Vec<String>,
}

/// What is due at `now`, if anything. `bundle_current` says that the webhook
/// configurations' caBundle already held the Secret's `ca.crt` before this round (it was
/// not just rewritten): a CA rollover only moves the serving certificate to the new CA then.
pub fn plan(
    current: &Parsed,
    settings: &Settings,
    now: OffsetDateTime,
    bundle_current: bool,
) -> Result<Option<Plan>, GenerateError> {
    let overlap = to_time(settings.overlap());
    let mut reasons = Vec::new();
    let old = &current.material;

    // CAs that expired can neither sign nor verify anything.
    let mut cas: Vec<CaCert> = old
        .cas
        .iter()
        .filter(|ca| !ca.validity.is_expired_at(now))
        .cloned()
        .collect();
    if cas.is_empty() {
        let material = Material::fresh(settings, now)?;
        reasons.push(format!(
            "every CA has expired (last at {}): new CA and serving certificate; the caBundle is rewritten",
            old.cas
                .iter()
                .map(|c| c.validity.not_after)
                .max()
                .map_or_else(String::new, rfc3339)
        ));
        return Ok(Some(Plan { material, reasons }));
    }
    if cas.len() < old.cas.len() {
        reasons.push("dropped an expired CA".into());
    }
    let leaf_issuer = current
        .leaf_issuer
        .map(|i| &old.cas[i])
        .and_then(|issuer| cas.iter().position(|ca| ca.der == issuer.der));
    let mut rollover_at = old.rollover_at;
    let mut signer: usize;
    let mut reissue: Option<String> = None;

    if cas.len() == 1 {
        rollover_at = None;
        signer = 0;
        if cas[0].validity.needs_renewal(now) {
            // Step 1 of a rollover: trust a new CA next to the old one.
            let new = CaCert::generate(now, settings.ca_lifetime)?;
            reasons.push(format!(
                "CA {} expires at {} (a third of its lifetime left): added CA {} to ca.crt; \
                 the serving certificate moves to it after {}",
                short(&cas[0].serial()),
                rfc3339(cas[0].validity.not_after),
                short(&new.serial()),
                format_duration(settings.overlap())
            ));
            cas.push(new);
            rollover_at = Some(now);
        }
    } else {
        let newest = cas.len() - 1;
        let since = match rollover_at {
            Some(t) => t,
            None => {
                reasons.push("CA rollover without its step time: overlap restarted".into());
                rollover_at = Some(now);
                now
            }
        };
        if leaf_issuer == Some(newest) {
            signer = newest;
            if now >= since + overlap {
                // Step 3: every replica serves a certificate of the new CA.
                reasons.push(format!(
                    "the serving certificate has been signed by CA {} for {}: dropped the older CA(s)",
                    short(&cas[newest].serial()),
                    format_duration(settings.overlap())
                ));
                cas.drain(..newest);
                signer = 0;
                rollover_at = None;
            }
        } else {
            signer = leaf_issuer.unwrap_or(0);
            if !bundle_current {
                // Someone rewrote the caBundle: the overlap counts from now.
                reasons.push("the caBundle did not hold every CA: overlap restarted".into());
                rollover_at = Some(now);
            } else if now >= since + overlap {
                // Step 2: the caBundle has trusted the new CA for an overlap.
                reissue = Some(format!(
                    "the caBundle has trusted CA {} for {}: serving certificate re-issued by it",
                    short(&cas[newest].serial()),
                    format_duration(settings.overlap())
                ));
                signer = newest;
                rollover_at = Some(now);
            }
        }
    }

    // The serving certificate itself.
    let leaf_validity = current.pair.leaf_validity();
    let missing: Vec<String> = settings
        .dns_names
        .iter()
        .filter(|n| !current.leaf_dns.contains(n))
        .cloned()
        .chain(
            settings
                .ip_addresses
                .iter()
                .filter(|ip| !current.leaf_ips.contains(ip))
                .map(IpAddr::to_string),
        )
        .collect();
    let mut dns = settings.dns_names.clone();
    let mut ips = settings.ip_addresses.clone();
    if reissue.is_none() {
        reissue = if leaf_issuer.is_none() {
            Some("the serving certificate is not signed by a CA of ca.crt: re-issued".into())
        } else if leaf_validity.is_expired_at(now) {
            Some(format!(
                "the serving certificate expired at {}: re-issued",
                rfc3339(leaf_validity.not_after)
            ))
        } else if leaf_validity.needs_renewal(now) {
            Some(format!(
                "the serving certificate expires at {} (a third of its lifetime left): renewed",
                rfc3339(leaf_validity.not_after)
            ))
        } else if !missing.is_empty() {
            // Another replica may run with other names (a rollout changing them): keep
            // theirs too, so that the two do not take turns re-issuing.
            for name in &current.leaf_dns {
                if !dns.contains(name) {
                    dns.push(name.clone());
                }
            }
            for ip in &current.leaf_ips {
                if !ips.contains(ip) {
                    ips.push(*ip);
                }
            }
            Some(format!(
                "the serving certificate lacks {}: re-issued",
                missing.join(", ")
            ))
        } else {
            None
        };
    }
    let leaf = match reissue {
        Some(reason) => {
            reasons.push(reason);
            cas[signer].issue(settings, &dns, &ips, now)?
        }
        None => old.leaf.clone(),
    };
    if reasons.is_empty() {
        return Ok(None);
    }
    Ok(Some(Plan {
        material: Material {
            cas,
            leaf,
            rollover_at,
        },
        reasons,
    }))
}

/// When [`plan`] may next have something to do (a lower bound for sleeping).
pub fn next_due(current: &Parsed, settings: &Settings) -> OffsetDateTime {
    let mut due = current.pair.leaf_validity().renew_at();
    if let Some(newest) = current.material.cas.last() {
        due = due.min(newest.validity.renew_at());
    }
    if let (true, Some(t)) = (current.material.cas.len() > 1, current.material.rollover_at) {
        due = due.min(t + to_time(settings.overlap()));
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfmanaged::test_support::{parse, secs, settings};
    use time::Duration;

    #[test]
    fn leaf_renewed_when_a_third_is_left_with_the_same_ca() {
        let s = settings(30, 600);
        let t0 = OffsetDateTime::now_utc();
        let m = Material::fresh(&s, t0).unwrap();
        let p = parse(&m, &s);
        let v = p.pair.leaf_validity();
        // Backdated 3 s: [t0-3, t0+30], 33 s, renewed at t0+19.
        assert!(
            plan(&p, &s, v.renew_at() - secs(1), true)
                .unwrap()
                .is_none()
        );
        let plan = plan(&p, &s, v.renew_at(), true)
            .unwrap()
            .expect("renewal due");
        assert!(
            plan.reasons[0].contains("a third of its lifetime left"),
            "{:?}",
            plan.reasons
        );
        let q = parse(&plan.material, &s);
        assert_eq!(q.leaf_issuer, Some(0));
        assert_eq!(q.material.cas[0].der, p.material.cas[0].der, "same CA");
        assert_ne!(q.pair.serial(), p.pair.serial());
    }

    #[test]
    fn ca_rollover_adds_switches_then_drops_an_overlap_apart() {
        let s = settings(30, 60);
        let overlap = to_time(s.overlap());
        let t0 = OffsetDateTime::now_utc();
        let m = Material::fresh(&s, t0).unwrap();
        let p = parse(&m, &s);
        let ca1 = p.material.cas[0].clone();
        let t1 = ca1.validity.renew_at();

        // Step 1: a new CA is trusted next to the old one; the leaf (renewed too, it is due)
        // is still signed by the old one.
        let step1 = plan(&p, &s, t1, true).unwrap().expect("CA rollover due");
        let p1 = parse(&step1.material, &s);
        assert_eq!(p1.material.cas.len(), 2);
        assert_eq!(p1.material.cas[0].der, ca1.der);
        assert_eq!(p1.leaf_issuer, Some(0), "{:?}", step1.reasons);
        assert_eq!(p1.material.rollover_at, Some(t1));
        assert!(
            p1.pair.leaf_validity().not_after <= ca1.validity.not_after,
            "capped by its CA"
        );

        // Within the overlap: nothing (the leaf is fresh), or a renewal by the OLD CA.
        assert!(
            plan(&p1, &s, t1 + overlap - secs(1), true)
                .unwrap()
                .is_none()
        );
        // The caBundle was found out of date: the overlap starts again.
        let restart = plan(&p1, &s, t1 + overlap, false)
            .unwrap()
            .expect("restart");
        assert_eq!(restart.material.rollover_at, Some(t1 + overlap));
        assert_eq!(parse(&restart.material, &s).leaf_issuer, Some(0));

        // Step 2: the leaf moves to the new CA.
        let t2 = t1 + overlap;
        let step2 = plan(&p1, &s, t2, true).unwrap().expect("switch due");
        let p2 = parse(&step2.material, &s);
        assert_eq!(p2.material.cas.len(), 2);
        assert_eq!(p2.leaf_issuer, Some(1), "{:?}", step2.reasons);
        assert_eq!(p2.material.rollover_at, Some(t2));
        assert!(
            plan(&p2, &s, t2 + overlap - secs(1), true)
                .unwrap()
                .is_none()
        );

        // Step 3: the old CA goes.
        let t3 = t2 + overlap;
        let step3 = plan(&p2, &s, t3, true).unwrap().expect("drop due");
        let p3 = parse(&step3.material, &s);
        assert_eq!(p3.material.cas.len(), 1);
        assert_eq!(p3.material.cas[0].der, p2.material.cas[1].der);
        assert_eq!(p3.leaf_issuer, Some(0));
        assert_eq!(p3.pair.serial(), p2.pair.serial(), "the leaf is kept");
        assert_eq!(p3.material.rollover_at, None);
        assert!(
            step3
                .material
                .to_secret(&s)
                .metadata
                .annotations
                .unwrap()
                .is_empty()
        );
        // Before the old CA expires.
        assert!(
            t3 < ca1.validity.not_after,
            "{t3} vs {}",
            ca1.validity.not_after
        );
        assert!(plan(&p3, &s, t3 + secs(1), true).unwrap().is_none());
    }

    #[test]
    fn expired_everything_starts_over() {
        let s = settings(30, 60);
        let t0 = OffsetDateTime::now_utc() - Duration::days(1);
        let p = parse(&Material::fresh(&s, t0).unwrap(), &s);
        let now = OffsetDateTime::now_utc();
        let fresh = plan(&p, &s, now, true).unwrap().expect("due");
        assert!(fresh.reasons[0].contains("every CA has expired"));
        let q = parse(&fresh.material, &s);
        assert!(q.material.cas[0].validity.is_valid_at(now));
        assert!(q.pair.leaf_validity().is_valid_at(now));
    }

    #[test]
    fn leaf_missing_a_name_is_reissued_with_both_sets() {
        let s = settings(3600, 86_400);
        let now = OffsetDateTime::now_utc();
        let p = parse(&Material::fresh(&s, now).unwrap(), &s);
        let other = Settings {
            dns_names: vec!["other.example".into()],
            ..s.clone()
        };
        let plan = plan(&p, &other, now, true).unwrap().expect("names missing");
        let q = parse(&plan.material, &other);
        assert!(q.leaf_dns.contains(&"other.example".to_owned()));
        assert!(q.leaf_dns.contains(&"wi-webhook.wi-system.svc".to_owned()));
        // Both replicas are now content.
        assert!(super::plan(&q, &other, now, true).unwrap().is_none());
        assert!(super::plan(&q, &s, now, true).unwrap().is_none());
    }
}
