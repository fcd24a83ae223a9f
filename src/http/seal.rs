//! Secrets at rest: the sealed form of a secret's value (pure Rust, no IO but the random nonce).
//!
//! `sealed = version (1 byte) || nonce (24 bytes) || XChaCha20-Poly1305(value) (value + 16-byte tag)`
//!
//! The associated data binds the sealed value to its owner (role OID) and its name: a sealed
//! value copied to another role or another name does not open ([`Unsealed::WrongPlace`]), so a
//! row planted in `pulse.secret` under someone else's name is never that role's secret. Nonces
//! are random (192 bits: no practical risk of reuse under one key). The key is the cluster's
//! (`crate::http::keyfile`).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Length of a key.
pub const KEY_LEN: usize = 32;
/// The only framing version so far.
pub const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed value has on top of its plaintext.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// The cluster's secret key.
#[derive(Clone)]
pub struct Key([u8; KEY_LEN]);

impl Key {
    pub fn from_bytes(b: [u8; KEY_LEN]) -> Key {
        Key(b)
    }
    pub fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a sealed value did not open. Never carries any part of the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsealed {
    /// Not a sealed value of a known version (too short, or another version byte).
    Malformed,
    /// Authentication failed: sealed for another owner or name, altered, or sealed with another key.
    WrongPlace,
    /// Opened, but the value is not UTF-8 (cannot happen for values pg_pulse sealed).
    NotText,
}

impl std::fmt::Display for Unsealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsealed::Malformed => "its stored form is not a sealed value of this version of pg_pulse",
            Unsealed::WrongPlace => {
                "it was not sealed for this role and name with this cluster's key (a row written or copied into pulse.secret directly, or a replaced key file)"
            }
            Unsealed::NotText => "its value is not text",
        })
    }
}

/// The associated data: a domain tag, the version, the owner and the name.
fn associated(owner: u32, name: &str) -> Vec<u8> {
    let mut ad = Vec::with_capacity(24 + name.len());
    ad.extend_from_slice(b"pg_pulse secret\0");
    ad.push(VERSION);
    ad.extend_from_slice(&owner.to_be_bytes());
    ad.extend_from_slice(name.as_bytes());
    ad
}

/// Seals `value` of secret `name` of role `owner` with a given nonce (tests; see [`seal`]).
pub fn seal_with_nonce(
    key: &Key,
    owner: u32,
    name: &str,
    value: &str,
    nonce: [u8; NONCE_LEN],
) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.0.as_slice().into());
    let ad = associated(owner, name);
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: value.as_bytes(),
                aad: &ad,
            },
        )
        // encryption fails only for messages longer than the cipher's limit (256 GiB)
        .unwrap_or_default();
    let mut out = Vec::with_capacity(OVERHEAD + value.len());
    out.push(VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Seals `value` of secret `name` of role `owner` under a random nonce from the OS.
pub fn seal(key: &Key, owner: u32, name: &str, value: &str) -> Result<Vec<u8>, String> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce)
        .map_err(|e| format!("the operating system gave no random bytes: {e}"))?;
    Ok(seal_with_nonce(key, owner, name, value, nonce))
}

/// Opens a sealed value of secret `name` of role `owner`.
pub fn open(key: &Key, owner: u32, name: &str, sealed: &[u8]) -> Result<String, Unsealed> {
    if sealed.len() < OVERHEAD || sealed[0] != VERSION {
        return Err(Unsealed::Malformed);
    }
    let (nonce, ct) = sealed[1..].split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.0.as_slice().into());
    let ad = associated(owner, name);
    let plain = cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &ad })
        .map_err(|_| Unsealed::WrongPlace)?;
    String::from_utf8(plain).map_err(|_| Unsealed::NotText)
}

/// A secret's value from the bytes of a file: UTF-8 text without NUL, one trailing newline (LF
/// or CRLF, as editors and `echo` add one) removed. Errors never show the content.
pub fn value_from_file(bytes: Vec<u8>) -> Result<String, &'static str> {
    let mut text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text")?;
    if text.contains('\0') {
        return Err("it contains a NUL byte");
    }
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_files_lose_one_trailing_newline() {
        let v = |s: &[u8]| value_from_file(s.to_vec());
        assert_eq!(v(b"abc\n"), Ok("abc".into()));
        assert_eq!(v(b"abc\r\n"), Ok("abc".into()));
        assert_eq!(v(b"abc\n\n"), Ok("abc\n".into()));
        assert_eq!(v(b"abc"), Ok("abc".into()));
        assert_eq!(v(b"ab\xffc"), Err("it is not UTF-8 text"));
        assert_eq!(v(b"ab\0c"), Err("it contains a NUL byte"));
    }
    use proptest::prelude::*;

    fn key(b: u8) -> Key {
        Key::from_bytes([b; KEY_LEN])
    }

    #[test]
    fn seals_and_opens_with_framing() {
        let s = seal(&key(7), 10, "api_key", "s3cr3t-value").unwrap();
        assert_eq!(s[0], VERSION);
        assert_eq!(s.len(), OVERHEAD + "s3cr3t-value".len());
        assert!(!s.windows(6).any(|w| w == b"s3cr3t"), "ciphertext only");
        assert_eq!(open(&key(7), 10, "api_key", &s).unwrap(), "s3cr3t-value");
        // a fresh nonce each time
        let t = seal(&key(7), 10, "api_key", "s3cr3t-value").unwrap();
        assert_ne!(s, t);
        assert_ne!(s[1..25], t[1..25]);
    }

    #[test]
    fn another_owner_name_or_key_does_not_open() {
        let s = seal(&key(7), 10, "api_key", "s3cr3t-value").unwrap();
        assert_eq!(open(&key(7), 11, "api_key", &s), Err(Unsealed::WrongPlace));
        assert_eq!(open(&key(7), 10, "api_kez", &s), Err(Unsealed::WrongPlace));
        assert_eq!(open(&key(8), 10, "api_key", &s), Err(Unsealed::WrongPlace));
        // (owner, name) are not confused across the boundary between them
        let s = seal_with_nonce(&key(1), 0x0000_0102, "x", "value-123", [3; 24]);
        assert_eq!(
            open(&key(1), 0x0000_0001, "\u{2}x", &s),
            Err(Unsealed::WrongPlace)
        );
    }

    #[test]
    fn malformed_and_tampered_values_are_refused() {
        let k = key(1);
        assert_eq!(open(&k, 1, "n", b""), Err(Unsealed::Malformed));
        assert_eq!(
            open(
                &k,
                1,
                "n",
                b"plaintext-from-0.3.0-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            ),
            Err(Unsealed::Malformed)
        );
        let mut s = seal(&k, 1, "n", "abcdefgh").unwrap();
        s[0] = 2;
        assert_eq!(open(&k, 1, "n", &s), Err(Unsealed::Malformed));
        s[0] = VERSION;
        let last = s.len() - 1;
        s[last] ^= 1;
        assert_eq!(open(&k, 1, "n", &s), Err(Unsealed::WrongPlace));
        assert!(
            format!("{:?}", k).contains(".."),
            "a key's Debug shows nothing"
        );
    }

    proptest! {
        #[test]
        fn round_trip_and_binding(value in "\\PC{0,64}", name in "[a-z_]{1,12}", owner in any::<u32>(), nonce in any::<[u8; 24]>()) {
            let k = key(9);
            let s = seal_with_nonce(&k, owner, &name, &value, nonce);
            prop_assert_eq!(open(&k, owner, &name, &s), Ok(value.clone()));
            prop_assert_eq!(open(&k, owner.wrapping_add(1), &name, &s), Err(Unsealed::WrongPlace));
            let other = format!("{name}x");
            prop_assert_eq!(open(&k, owner, &other, &s), Err(Unsealed::WrongPlace));
        }
    }
}
