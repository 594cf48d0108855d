//! Time arithmetic of certificates: validity windows, when to renew, and the durations of
//! the command line (`90d`, `10m`, `1h30m`).
//!
//! The renewal rule is the one cert-manager applies by default: renew when a third of the
//! lifetime is left. A certificate valid for 90 days is renewed after 60, which leaves 30 days
//! to notice and fix a renewal that keeps failing.

use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};

use crate::CertificateError;

/// When a certificate may be used: `[not_before, not_after]`, both inclusive (RFC 5280).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    pub fn new(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Self {
        Self {
            not_before,
            not_after,
        }
    }

    /// The validity of a parsed certificate.
    pub fn of_x509(cert: &x509_parser::certificate::X509Certificate<'_>) -> Self {
        let validity = cert.validity();
        Self {
            not_before: timestamp(validity.not_before.timestamp()),
            not_after: timestamp(validity.not_after.timestamp()),
        }
    }

    /// The validity of a DER certificate.
    pub fn of_der(der: &[u8]) -> Result<Self, CertificateError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)?;
        Ok(Self::of_x509(&cert))
    }

    /// The whole window, `not_after - not_before` (never negative).
    pub fn lifetime(&self) -> Duration {
        (self.not_after - self.not_before).max(Duration::ZERO)
    }

    /// What is left at `now` (negative once expired).
    pub fn remaining(&self, now: OffsetDateTime) -> Duration {
        self.not_after - now
    }

    /// When a third of the lifetime is left: the time to renew.
    pub fn renew_at(&self) -> OffsetDateTime {
        self.not_after - self.lifetime() / 3_i32
    }

    /// True from [`Validity::renew_at`] on (expired certificates included).
    pub fn needs_renewal(&self, now: OffsetDateTime) -> bool {
        now >= self.renew_at()
    }

    /// True while `now` is inside the window.
    pub fn is_valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }

    /// True when `now` is past the window.
    pub fn is_expired_at(&self, now: OffsetDateTime) -> bool {
        now > self.not_after
    }
}

/// The window of a certificate issued at `now` for `lifetime`: it starts a little in the
/// past (a tenth of the lifetime, at most one hour) so that a peer whose clock is slightly
/// behind accepts it at once, and it never outlives `cap` (the issuing CA's notAfter: a
/// certificate cannot be trusted longer than its issuer).
pub fn issue_window(
    now: OffsetDateTime,
    lifetime: StdDuration,
    cap: Option<OffsetDateTime>,
) -> Validity {
    let lifetime = to_time(lifetime);
    let backdate = (lifetime / 10_i32).min(Duration::HOUR);
    let mut not_after = now + lifetime;
    if let Some(cap) = cap {
        not_after = not_after.min(cap);
    }
    // X.509 has whole seconds: truncate, so the certificate says what we computed.
    Validity::new(
        whole_seconds(now - backdate),
        whole_seconds(not_after).max(whole_seconds(now)),
    )
}

/// `std` to `time` duration (saturating: a lifetime of centuries is not a thing).
pub fn to_time(d: StdDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::MAX)
}

/// `time` to `std` duration; negative durations become zero.
pub fn to_std(d: Duration) -> StdDuration {
    StdDuration::try_from(d).unwrap_or(StdDuration::ZERO)
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// A time from a Unix timestamp (X.509 times are years 0000..=9999, always in range).
pub(crate) fn timestamp(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

const USAGE: &str =
    "expected a duration such as 90d, 12h, 10m, 30s or 500ms (units d, h, m, s, ms)";

/// Why a duration of the command line does not parse; `text` is what was given, trimmed.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: {}", USAGE)]
    Empty,
    #[error("{text:?}: {}", USAGE)]
    NoNumber { text: String },
    #[error("{text:?}: number too large")]
    TooLarge {
        text: String,
        source: std::num::ParseIntError,
    },
    #[error("{text:?}: missing unit: {}", USAGE)]
    MissingUnit { text: String },
    #[error("{text:?}: unknown unit {unit:?}: {}", USAGE)]
    UnknownUnit { text: String, unit: String },
    #[error("{text:?}: must be more than zero")]
    Zero { text: String },
}

/// Parses a duration of the command line: one or more `<number><unit>` with the units `ms`,
/// `s`, `m`, `h` and `d`, e.g. `90d`, `10m`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<StdDuration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let given = || text.to_owned();
    let mut total = StdDuration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(DurationError::NoNumber { text: given() });
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|source| DurationError::TooLarge {
                text: given(),
                source,
            })?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => StdDuration::from_millis(number),
            "s" => StdDuration::from_secs(number),
            "m" => StdDuration::from_secs(number.saturating_mul(60)),
            "h" => StdDuration::from_secs(number.saturating_mul(3600)),
            "d" => StdDuration::from_secs(number.saturating_mul(86_400)),
            "" => return Err(DurationError::MissingUnit { text: given() }),
            other => {
                return Err(DurationError::UnknownUnit {
                    text: given(),
                    unit: other.to_owned(),
                });
            }
        };
        total = total.saturating_add(part);
    }
    if total.is_zero() {
        return Err(DurationError::Zero { text: given() });
    }
    Ok(total)
}

/// A duration in the form [`parse_duration`] reads, largest units first (`1h30m`, `90d`).
pub fn format_duration(d: StdDuration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn renewal_starts_when_a_third_of_the_lifetime_is_left() {
        // 90 days: renew after 60, with 30 left.
        let v = Validity::new(t(0), t(0) + Duration::days(90));
        assert_eq!(v.lifetime(), Duration::days(90));
        assert_eq!(v.renew_at(), t(0) + Duration::days(60));
        assert!(!v.needs_renewal(t(0) + Duration::days(60) - Duration::SECOND));
        assert!(v.needs_renewal(t(0) + Duration::days(60)));
        assert_eq!(
            v.remaining(t(0) + Duration::days(60)),
            Duration::days(30),
            "a third is left at the renewal time"
        );
        // Expired certificates need renewal too.
        assert!(v.needs_renewal(t(0) + Duration::days(365)));
        assert!(v.is_expired_at(t(0) + Duration::days(90) + Duration::SECOND));
        assert!(!v.is_expired_at(t(0) + Duration::days(90)));
    }

    #[test]
    fn renewal_of_short_and_odd_lifetimes() {
        // 30 s: renew at 20 s.
        let v = Validity::new(t(0), t(30));
        assert_eq!(v.renew_at(), t(20));
        assert!(!v.needs_renewal(t(19)));
        assert!(v.needs_renewal(t(20)));
        // 10 s: a third is 3.333 s, renew at 6.667 s.
        let v = Validity::new(t(0), t(10));
        assert!(!v.needs_renewal(t(6)));
        assert!(v.needs_renewal(t(7)));
        // A window that is backwards (broken certificate) is always due.
        let v = Validity::new(t(10), t(0));
        assert_eq!(v.lifetime(), Duration::ZERO);
        assert!(v.needs_renewal(t(0)));
        assert!(!v.is_valid_at(t(5)));
    }

    #[test]
    fn validity_window_is_inclusive() {
        let v = Validity::new(t(0), t(10));
        assert!(v.is_valid_at(t(0)) && v.is_valid_at(t(10)));
        assert!(!v.is_valid_at(t(-1)) && !v.is_valid_at(t(11)));
    }

    #[test]
    fn issue_window_backdates_a_tenth_at_most_an_hour_and_respects_the_cap() {
        let now = t(0);
        // 30 s: 3 s in the past.
        let w = issue_window(now, StdDuration::from_secs(30), None);
        assert_eq!((w.not_before, w.not_after), (t(-3), t(30)));
        // 90 days: one hour in the past, not nine days.
        let w = issue_window(now, StdDuration::from_secs(90 * 86_400), None);
        assert_eq!(w.not_before, now - Duration::HOUR);
        assert_eq!(w.not_after, now + Duration::days(90));
        // Capped by the CA's notAfter.
        let w = issue_window(now, StdDuration::from_secs(90 * 86_400), Some(t(600)));
        assert_eq!(w.not_after, t(600));
        // A cap in the past still gives a window that ends no earlier than now.
        let w = issue_window(now, StdDuration::from_secs(60), Some(t(-100)));
        assert_eq!(w.not_after, now);
        // Sub-second parts are dropped (X.509 has whole seconds).
        let now = t(0) + Duration::milliseconds(700);
        let w = issue_window(now, StdDuration::from_secs(30), None);
        assert_eq!(w.not_after, t(30));
    }

    #[test]
    fn durations_parse_and_format() {
        let d = |s| parse_duration(s).unwrap();
        assert_eq!(d("90d"), StdDuration::from_secs(90 * 86_400));
        assert_eq!(d("10m"), StdDuration::from_secs(600));
        assert_eq!(d("30s"), StdDuration::from_secs(30));
        assert_eq!(d("500ms"), StdDuration::from_millis(500));
        assert_eq!(d("1h30m"), StdDuration::from_secs(5400));
        assert_eq!(d(" 12h "), StdDuration::from_secs(12 * 3600));
        for bad in ["", "10", "d", "10x", "1.5h", "-5s", "0s", "h10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
        let err = parse_duration("10").unwrap_err();
        assert!(matches!(err, DurationError::MissingUnit { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("\"10\": missing unit: {USAGE}"),
            "the message of the command line"
        );
        let err = parse_duration("99999999999999999999s").unwrap_err();
        assert!(err.to_string().ends_with("number too large"), "{err}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "the cause is kept"
        );
        for s in [
            "90d",
            "1h30m",
            "10m",
            "30s",
            "500ms",
            "3650d",
            "1d2h3m4s5ms",
        ] {
            assert_eq!(format_duration(d(s)), s);
        }
    }
}
