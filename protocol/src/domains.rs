//! Egress allow-lists: the domain patterns a Standard or Strict container
//! may reach (`allowedDomains`), how they are checked and how a host name is
//! matched against them. Shared by the orchestrator (which refuses a bad
//! list with a 400 before anything is stored) and the agent (which enforces
//! the list).
//!
//! A pattern is either an exact host name (`pypi.org`) or a wildcard
//! `*.example.com`, which matches every name *below* `example.com`
//! (`a.example.com`, `a.b.example.com`) but not `example.com` itself: list
//! both to allow both. Names are compared in lowercase ASCII; a list is
//! normalised to lowercase when checked. Refused: IP addresses (a list
//! names domains), a wildcard anywhere but as the whole first label, a
//! wildcard over a bare top-level domain (`*.com`), single-label names
//! (`localhost`), labels that are not LDH (letters, digits, hyphens, not
//! at either end) or longer than 63 bytes, names over 253 bytes, and lists
//! of more than [`MAX_DOMAINS`] patterns.

use crate::error::Invalid;

/// The most patterns one list may hold.
pub const MAX_DOMAINS: usize = 256;
/// The longest host name (RFC 1035, without the final dot).
const MAX_NAME: usize = 253;
const FIELD: &str = "allowedDomains";

/// Check every pattern of `list` and return it lowercased, in its order,
/// without duplicates.
pub fn check_list(list: &[String]) -> Result<Vec<String>, Invalid> {
    if list.len() > MAX_DOMAINS {
        return Err(Invalid::new(
            FIELD,
            format!("at most {MAX_DOMAINS} patterns, not {}", list.len()),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for pattern in list {
        let p = check_pattern(pattern)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Check one pattern (see the module docs) and return it lowercased.
pub fn check_pattern(pattern: &str) -> Result<String, Invalid> {
    let bad = |why: &str| Invalid::new(FIELD, format!("{pattern:?}: {why}"));
    let p = pattern.to_ascii_lowercase();
    let (wild, name) = match p.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, p.as_str()),
    };
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(bad("is longer than 253 bytes"));
    }
    if name.contains('*') {
        return Err(bad(
            "a wildcard may only be the whole first label, as in *.example.com",
        ));
    }
    if name.parse::<std::net::IpAddr>().is_ok() || name.starts_with('[') {
        return Err(bad("is an IP address; allow-lists name domains"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for label in &labels {
        check_label(label).map_err(bad)?;
    }
    if labels.len() < 2 {
        return Err(bad(if wild {
            "a wildcard over a bare top-level domain would allow a whole TLD"
        } else {
            "needs at least two labels (a bare top-level or local name is not allowed)"
        }));
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("a top-level domain cannot be all digits"));
    }
    Ok(p)
}

fn check_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("has an empty label (two dots, or a dot at an end)");
    }
    if label.len() > 63 {
        return Err("has a label longer than 63 bytes");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("may hold only letters, digits, hyphens and dots");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("has a label starting or ending with a hyphen");
    }
    Ok(())
}

/// Whether the host name `host` is allowed by the checked, lowercase
/// `list`. `host` is compared in lowercase, without one final dot.
pub fn allows(list: &[String], host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    list.iter().any(|p| matches(p, &host))
}

fn matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .and_then(|head| head.strip_suffix('.'))
            .is_some_and(|head| !head.is_empty()),
        None => pattern == host,
    }
}

/// Whether every host `pattern` admits is also admitted by `list`: an
/// exact name must be allowed by `list`; a wildcard must sit below a
/// wildcard of `list` (`*.a.example.com` under `*.example.com`) or equal one.
pub fn covered(list: &[String], pattern: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => list.iter().any(|p| match p.strip_prefix("*.") {
            Some(outer) => suffix == outer || matches(p, suffix),
            None => false,
        }),
        None => allows(list, pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        check_list(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_names_and_wildcards_match_as_documented() {
        let l = list(&["PyPI.org", "*.example.com"]);
        assert_eq!(l, ["pypi.org", "*.example.com"]);
        assert!(allows(&l, "pypi.org"));
        assert!(allows(&l, "PYPI.ORG."));
        assert!(!allows(&l, "files.pypi.org"));
        assert!(allows(&l, "a.example.com"));
        assert!(allows(&l, "a.b.example.com"));
        assert!(!allows(&l, "example.com"));
        assert!(!allows(&l, "badexample.com"));
        assert!(!allows(&l, "example.com.evil.net"));
        assert!(!allows(&l, "127.0.0.1"));
    }

    #[test]
    fn bad_patterns_are_refused_with_their_reason() {
        for (p, why) in [
            ("*.com", "top-level"),
            ("*", "whole first label"),
            ("com", "two labels"),
            ("localhost", "two labels"),
            ("a.*.example.com", "first label"),
            ("foo*.example.com", "first label"),
            ("10.0.0.1", "IP address"),
            ("[::1]", "IP address"),
            ("::1", "IP address"),
            ("exa mple.com", "letters, digits"),
            ("a..com", "empty label"),
            ("-a.com", "hyphen"),
            ("a.123", "all digits"),
            ("http://a.com", "letters, digits"),
        ] {
            let e = check_pattern(p).unwrap_err();
            assert_eq!(e.field, "allowedDomains");
            assert!(e.reason.contains(why), "{p}: {}", e.reason);
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(check_pattern(&long).unwrap_err().reason.contains("63"));
        let too_many: Vec<String> = (0..=MAX_DOMAINS)
            .map(|i| format!("h{i}.example.com"))
            .collect();
        assert!(check_list(&too_many)
            .unwrap_err()
            .reason
            .contains("at most 256"));
    }

    #[test]
    fn a_narrower_list_is_covered_and_a_wider_one_is_not() {
        let tenant = list(&["pypi.org", "*.example.com"]);
        assert!(covered(&tenant, "pypi.org"));
        assert!(covered(&tenant, "a.example.com"));
        assert!(covered(&tenant, "*.example.com"));
        assert!(covered(&tenant, "*.a.example.com"));
        assert!(!covered(&tenant, "example.com"));
        assert!(!covered(&tenant, "*.pypi.org"));
        assert!(!covered(&tenant, "github.com"));
    }
}
