//! Client ids read as Azure reads them: a GUID in any of the spellings .NET's `Guid.Parse`
//! accepts, so that `{id}`, `(id)`, `ID` or `urn:uuid:id` can never pass for "another
//! identity" while naming the same managed identity.
//!
//! Accepted, after trimming Unicode white space at both ends (as `Guid.Parse` does):
//! `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, the same without hyphens (32 hex digits), either
//! of those in `{}` or `()`, and `urn:uuid:` before the hyphenated form; hex digits in any
//! case. Anything else is not a GUID, a zero-width character included (it is not white
//! space, so it is not trimmed). [`loose`] strips such invisible characters too: a value that
//! is no GUID but names one once they are gone is still that identity for the pool checks.

/// A GUID as its 128 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(u128);

impl std::fmt::Display for Guid {
    /// The canonical form: lower case, hyphenated.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

/// Parses `s` as Azure does (see the module's documentation).
pub fn parse(s: &str) -> Option<Guid> {
    let s = s.trim();
    let body = if let Some(rest) = strip_prefix_ignore_case(s, "urn:uuid:") {
        return hyphenated(rest);
    } else if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        inner
    } else if let Some(inner) = s.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        inner
    } else {
        s
    };
    hyphenated(body).or_else(|| digits(body))
}

/// [`parse`] after removing every invisible character (zero-width spaces and joiners, the
/// byte order mark, soft hyphens and other format characters) anywhere in `s`.
pub fn loose(s: &str) -> Option<Guid> {
    let visible: String = s.chars().filter(|c| !invisible(*c)).collect();
    parse(&visible)
}

/// Characters that print as nothing but are not white space.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}' | '\u{E0000}'..='\u{E0FFF}')
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `8-4-4-4-12` hex digits.
fn hyphenated(s: &str) -> Option<Guid> {
    let groups: Vec<&str> = s.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lengths != [8, 4, 4, 4, 12] {
        return None;
    }
    digits(&groups.concat())
}

/// Exactly 32 hex digits.
fn digits(s: &str) -> Option<Guid> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(s, 16).ok().map(Guid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b";

    #[test]
    fn every_spelling_azure_accepts_is_the_same_guid() {
        let want = parse(ID).unwrap();
        for s in [
            "6F1A3F4E-2B7C-4F0E-9A51-3C2D1E0F9A8B",
            "{6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b}",
            "(6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b)",
            "6f1a3f4e2b7c4f0e9a513c2d1e0f9a8b",
            "{6f1a3f4e2b7c4f0e9a513c2d1e0f9a8b}",
            "urn:uuid:6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b",
            "URN:UUID:6F1A3F4E-2B7C-4F0E-9A51-3C2D1E0F9A8B",
            "  6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b\t\n",
            "\u{3000}6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b\u{00A0}",
        ] {
            assert_eq!(parse(s), Some(want), "{s:?}");
        }
        assert_eq!(want.to_string(), ID);
    }

    #[test]
    fn anything_else_is_not_a_guid() {
        for s in [
            "",
            "not-a-guid",
            "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8",
            "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8bb",
            "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8g",
            "6f1a3f4e2b7c-4f0e-9a51-3c2d1e0f9a8b",
            "{6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b)",
            "{6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b",
            "urn:uuid:{6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b}",
            "urn:uuid:6f1a3f4e2b7c4f0e9a513c2d1e0f9a8b",
            "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b\u{200B}",
            "\u{FEFF}6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b",
            "+6f1a3f4e2b7c4f0e9a513c2d1e0f9a8",
            "６f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn loose_sees_through_invisible_characters_only() {
        let want = parse(ID);
        for s in [
            "6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b\u{200B}",
            "\u{FEFF}6f1a3f4e-2b7c-\u{200D}4f0e-9a51-3c2d1e0f9a8b",
            "{6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8b}\u{2060}",
        ] {
            assert_eq!(loose(s), want, "{s:?}");
        }
        assert_eq!(loose("6f1a3f4e-2b7c-4f0e-9a51-3c2d1e0f9a8x"), None);
    }
}
