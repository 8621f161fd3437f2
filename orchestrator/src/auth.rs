//! Secrets and ids: token minting, SHA-256 hashing, constant-time comparison,
//! Bearer header parsing and UUIDv4 generation.
//!
//! A token is `crops_<kind>_<base64url(32 random bytes)>` (43 characters of
//! unpadded base64url). Only [`hash_hex`] of a token is ever stored.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// The kinds of secret, by prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Admin,
    Join,
    Worker,
    /// A member's API token.
    Member,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Admin => "crops_adm_",
            Self::Join => "crops_join_",
            Self::Worker => "crops_wkr_",
            Self::Member => "crops_tok_",
        }
    }
}

/// Why a secret could not be produced or read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the system random number generator failed")]
    Random,
    #[error("Authorization header is not valid text")]
    HeaderNotText,
    #[error("Authorization header is not a Bearer token")]
    NotBearer,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| AuthError::Random)?;
    Ok(out)
}

/// A fresh random token of `kind`.
pub fn mint(kind: TokenKind) -> Result<String, AuthError> {
    let bytes = random_bytes::<32>()?;
    Ok(format!(
        "{}{}",
        kind.prefix(),
        URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A random UUID, version 4, in its usual hyphenated lowercase form.
pub fn uuid_v4() -> Result<String, AuthError> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Whether `s` is a UUID in the form [`uuid_v4`] produces (any version).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// SHA-256 of a token.
pub fn hash(token: &str) -> [u8; 32] {
    let d = digest(&SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 of a token, in lowercase hex (the stored form).
pub fn hash_hex(token: &str) -> String {
    hex(&hash(token))
}

/// Compare two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer <token>` header. `Ok(None)` when
/// the header is absent.
pub fn bearer(headers: &hyper::HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(hyper::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| AuthError::HeaderNotText)?;
    let (scheme, token) = text.trim().split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(Some(token))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_prefix_and_43_chars() {
        let t = mint(TokenKind::Worker).unwrap();
        let rest = t.strip_prefix("crops_wkr_").unwrap();
        assert_eq!(rest.len(), 43);
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{t}"
        );
        assert_ne!(t, mint(TokenKind::Worker).unwrap());
    }

    #[test]
    fn uuids_are_v4() {
        let u = uuid_v4().unwrap();
        assert!(is_uuid(&u), "{u}");
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert!(!is_uuid("../../etc/passwd"));
        assert!(!is_uuid("0000000-0000-0000-0000-0000000000000"));
    }

    #[test]
    fn hashing_and_comparison() {
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(bearer(&h).unwrap(), None);
        h.insert("authorization", "Bearer  tok ".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), Some("tok"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&h).is_err());
        h.insert("authorization", "Bearer".parse().unwrap());
        assert!(bearer(&h).is_err());
    }
}
