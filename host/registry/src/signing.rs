//! Publisher keys and signatures: ed25519, keys and signatures in base64 (as minisign and
//! wasmCloud show them).

use anyhow::{Context, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// A new key pair: (secret key, public key), both base64. The secret is the 32-byte seed.
pub fn generate() -> (String, String) {
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    (
        B64.encode(key.to_bytes()),
        B64.encode(key.verifying_key().to_bytes()),
    )
}

/// Signs `message` with a base64 secret key; returns (public key, signature), base64.
pub fn sign(secret_b64: &str, message: &[u8]) -> anyhow::Result<(String, String)> {
    let seed: [u8; 32] = B64
        .decode(secret_b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("the secret key is not 32 bytes of base64 (as `llmb plugin keygen` writes)")?;
    let key = SigningKey::from_bytes(&seed);
    let sig = key.sign(message);
    Ok((
        B64.encode(key.verifying_key().to_bytes()),
        B64.encode(sig.to_bytes()),
    ))
}

/// Checks a base64 signature of `message` under a base64 public key.
pub fn verify(public_b64: &str, message: &[u8], sig_b64: &str) -> anyhow::Result<()> {
    let key = parse_public_key(public_b64)?;
    let sig: [u8; 64] = B64
        .decode(sig_b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("the signature is not 64 bytes of base64")?;
    key.verify(message, &Signature::from_bytes(&sig))
        .ok()
        .context("the signature does not match (wrong key, or the manifest was altered)")
}

/// A public key as users paste it: 32 bytes of base64.
pub fn parse_public_key(public_b64: &str) -> anyhow::Result<VerifyingKey> {
    let bytes: [u8; 32] = B64
        .decode(public_b64.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{public_b64:?} is not a public key (32 bytes of base64)"))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .ok()
        .with_context(|| format!("{public_b64:?} is not a valid ed25519 public key"))?;
    ensure!(!key.is_weak(), "{public_b64:?} is a weak ed25519 key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let (secret, public) = generate();
        let (signer, sig) = sign(&secret, b"hello").unwrap();
        assert_eq!(signer, public);
        verify(&public, b"hello", &sig).unwrap();
        assert!(verify(&public, b"hellO", &sig).is_err());
        let (_, other) = generate();
        assert!(verify(&other, b"hello", &sig).is_err());
        assert!(verify("not base64!", b"hello", &sig).is_err());
    }
}
