//! Signing secrets at rest: sealed with XChaCha20-Poly1305 under a key derived from
//! `SECRET_KEY` (HMAC-SHA256 of a fixed label), stored as `v1:` and base64 of the random
//! 24-byte nonce and the ciphertext. A database dump alone no longer lets anyone sign
//! events as the school.
//!
//! Rows written before this (`whsec_...` in plain text) are sealed at start-up; until then,
//! and when start-up cannot seal them (a key random to the process), they are read as they
//! are, so no delivery stops for it.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{AppError, AppResult};

/// The stored form's version; also the associated data, so a value cannot pass as another
/// version's.
const SEALED: &str = "v1:";
/// The label the sealing key is derived under, so it is never the key that signs JWTs.
const KEY_LABEL: &[u8] = b"attendance/webhook-signing-secrets/v1";
/// The prefix of a secret in plain text (a row from before sealing).
const PLAIN: &str = "whsec_";

/// Seals and opens signing secrets with the key `SECRET_KEY` gives.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl SecretBox {
    /// The box for `secret_key`.
    pub fn new(secret_key: &str) -> Self {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(secret_key.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(KEY_LABEL);
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// The stored form of `secret`.
    pub fn seal(&self, secret: &str) -> AppResult<String> {
        let nonce: [u8; 24] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: SEALED.as_bytes(),
                },
            )
            .map_err(|_| AppError::Internal("sealing a webhook secret failed".into()))?;
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        Ok(format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ))
    }

    /// The secret a stored value holds: opened when sealed, as it is when a legacy plain
    /// one. An error when it was sealed under another key (`SECRET_KEY` changed, or random
    /// to an earlier process) or is damaged.
    pub fn open(&self, stored: &str) -> Result<String, Unreadable> {
        if is_plain(stored) {
            return Ok(stored.to_owned());
        }
        let unreadable = || Unreadable;
        let bytes = stored
            .strip_prefix(SEALED)
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|bytes| bytes.len() > 24)
            .ok_or_else(unreadable)?;
        let (nonce, sealed) = bytes.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| unreadable())?;
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: SEALED.as_bytes(),
                },
            )
            .map_err(|_| unreadable())?;
        String::from_utf8(plain).map_err(|_| unreadable())
    }
}

/// A stored secret that does not open with this process's key. Its text, recorded as the
/// attempt's error, says what to do and never names the secret.
#[derive(Debug, thiserror::Error)]
#[error(
    "the webhook's signing secret cannot be read with this SECRET_KEY (it was sealed under \
     another one); rotate the secret"
)]
pub struct Unreadable;

/// Whether a stored value is a secret in plain text, from before sealing.
pub fn is_plain(stored: &str) -> bool {
    stored.starts_with(PLAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_with_the_same_key_only() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let sealed = SecretBox::new("one-secret-key-0123456789")
            .seal(secret)
            .unwrap();
        assert!(sealed.starts_with("v1:") && !sealed.contains("MfKQ9r8"));
        assert!(!is_plain(&sealed));
        assert_eq!(
            SecretBox::new("one-secret-key-0123456789")
                .open(&sealed)
                .unwrap(),
            secret
        );
        let other = SecretBox::new("another-secret-key-0123456789").open(&sealed);
        let message = other.unwrap_err().to_string();
        assert!(message.contains("rotate") && !message.contains("MfKQ9r8"));
    }

    #[test]
    fn each_seal_differs_and_damage_is_refused() {
        let secrets = SecretBox::new("k");
        let (a, b) = (
            secrets.seal("whsec_x").unwrap(),
            secrets.seal("whsec_x").unwrap(),
        );
        assert_ne!(a, b, "a fresh nonce each time");
        let mut damaged = a.clone().into_bytes();
        let last = damaged.len() - 3;
        damaged[last] = if damaged[last] == b'A' { b'B' } else { b'A' };
        assert!(secrets.open(&String::from_utf8(damaged).unwrap()).is_err());
        assert!(secrets.open("v1:").is_err());
        assert!(secrets.open("v2:AAAA").is_err());
    }

    #[test]
    fn a_legacy_plain_secret_reads_as_it_is() {
        assert_eq!(
            SecretBox::new("k").open("whsec_AAAA").unwrap(),
            "whsec_AAAA"
        );
    }
}
